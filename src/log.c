/*
 * log.c — one JSON line per event on stderr.
 *
 * Owns the format of log lines and the log level. Every line is built by
 * one ordered writer (struct log_line): time, level and event or msg first,
 * then the caller's fields in the caller's order, so lines diff and grep
 * alike; `/` is not escaped. Lines are written whole, by one write(2) of at most
 * PIPE_BUF bytes (or one line, when longer), so lines from different threads
 * never interleave. An event loop may batch its lines (log_batch): they are
 * kept in a per-thread buffer until it calls log_flush, once per turn, so a
 * busy loop writes several lines per system call. Warnings that clients can
 * cause at will go through one process-wide rate limit (log_warn_limited), so
 * a flood of dropped connections cannot flood the log. Never logs a secret or
 * a token. Every line it writes is valid UTF-8: bytes that are not are
 * replaced by U+FFFD, whoever put them in the line.
 */
#include "log.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "secret.h"
#include "utf8.h"

/* log_warn_limited's window: the second it started, the lines it wrote, and
 * those it dropped (not yet reported; atomic so a tick can look without the lock). */
static pthread_mutex_t limit_lock = PTHREAD_MUTEX_INITIALIZER;
static struct timespec limit_start;
static int limit_used;
static atomic_ullong limit_dropped, limit_dropped_total;

/* The calling thread's batch (log_batch): whole lines, at most PIPE_BUF bytes. */
static _Thread_local struct {
	bool on;
	size_t len;
	char buf[PIPE_BUF];
} batch;

/* The second the thread formatted last, and its "YYYY-MM-DDTHH:MM:SS". */
static _Thread_local time_t stamp_sec = -1;
static _Thread_local char stamp[24];

void log_timestamp(char *buf, size_t len)
{
	struct timespec ts;
	long ms;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != stamp_sec) {
		struct tm tm;
		gmtime_r(&ts.tv_sec, &tm);
		if (strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
			stamp[0] = '\0';
		stamp_sec = ts.tv_sec;
	}
	n = strlen(stamp);
	if (len < n + 6) {
		if (len)
			buf[0] = '\0';
		return;
	}
	ms = ts.tv_nsec / 1000000;
	memcpy(buf, stamp, n);
	buf[n] = '.';
	buf[n + 1] = (char)('0' + ms / 100);
	buf[n + 2] = (char)('0' + ms / 10 % 10);
	buf[n + 3] = (char)('0' + ms % 10);
	buf[n + 4] = 'Z';
	buf[n + 5] = '\0';
}

void log_flush(void)
{
	if (batch.len) {
		ssize_t n = write(STDERR_FILENO, batch.buf, batch.len);
		(void)n;
		batch.len = 0;
	}
}

void log_batch(int on)
{
	if (!on)
		log_flush();
	batch.on = on;
}

/* Offset of the first byte of s that does not start a valid UTF-8
 * sequence, or len. */
static size_t first_invalid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		uint32_t cp;
		size_t n;
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		if ((n = utf8_decode(p + i, len - i, &cp)) == 0)
			return i;
		i += n;
	}
	return len;
}

/*
 * A copy of s (malloc'ed, length in *outlen) with every byte that does not
 * start a valid UTF-8 sequence replaced by U+FFFD, from bad (the first such)
 * on; NULL when out of memory. JSON's structure is ASCII, so the line stays
 * the same JSON: only the text inside its strings changes.
 */
static char *repair_utf8(const char *s, size_t len, size_t bad, size_t *outlen)
{
	static const char fffd[] = "\xef\xbf\xbd";
	const unsigned char *p = (const unsigned char *)s;
	char *out = malloc(bad + (len - bad) * 3);
	size_t o = bad, i = bad;

	if (!out)
		return NULL;
	memcpy(out, s, bad);
	while (i < len) {
		uint32_t cp;
		size_t n = p[i] < 0x80 ? 1 : utf8_decode(p + i, len - i, &cp);
		if (n == 0) {
			memcpy(out + o, fffd, 3);
			o += 3;
			i++;
			continue;
		}
		memcpy(out + o, s + i, n);
		o += n;
		i += n;
	}
	*outlen = o;
	return out;
}

static void write_line(const char *s, size_t len)
{
	size_t bad = first_invalid(s, len);
	char *fixed = NULL;
	struct iovec iov[2];
	ssize_t n;

	/* Every line is valid UTF-8, whatever bytes a policy, a header or a
	 * claim put in it (issue 10, L2); a line that cannot be repaired is
	 * dropped rather than written broken. */
	if (bad < len) {
		if (!(fixed = repair_utf8(s, len, bad, &len)))
			return;
		s = fixed;
	}
	iov[0] = (struct iovec){(void *)s, len};
	iov[1] = (struct iovec){"\n", 1};

	if (batch.on && len < sizeof(batch.buf)) {
		if (len + 1 > sizeof(batch.buf) - batch.len)
			log_flush();
		memcpy(batch.buf + batch.len, s, len);
		batch.buf[batch.len + len] = '\n';
		batch.len += len + 1;
		free(fixed);
		return;
	}
	log_flush(); /* keeps the thread's lines in order */
	n = writev(STDERR_FILENO, iov, 2);
	(void)n;
	free(fixed);
}

/* ------------------------------------------------------- the line writer */

/* Lines longer than this are dropped (a policy's log is capped far below). */
#define LOG_LINE_MAX (256u * 1024)

static atomic_int min_level = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level lv)
{
	atomic_store(&min_level, (int)lv);
}

bool log_enabled(enum log_level lv)
{
	return (int)lv >= atomic_load_explicit(&min_level, memory_order_relaxed);
}

int log_level_parse(const char *name)
{
	for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++)
		if (name && strcmp(name, level_names[i]) == 0)
			return i;
	return -1;
}

const char *log_level_name(enum log_level lv)
{
	return (unsigned)lv < sizeof(level_names) / sizeof(level_names[0]) ? level_names[lv] : "info";
}

/* A JSON string: quotes, backslashes and control characters escaped; `/`
 * and every other byte as they are (UTF-8 is checked when the line is
 * written). */
static void put_string(struct buf *b, const char *s)
{
	const char *run = s;

	buf_add(b, "\"", 1);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		const char *esc = NULL;
		char hex[8];
		if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
			continue;
		buf_add(b, run, (size_t)(s - run));
		switch (c) {
		case '"':
			esc = "\\\"";
			break;
		case '\\':
			esc = "\\\\";
			break;
		case '\n':
			esc = "\\n";
			break;
		case '\r':
			esc = "\\r";
			break;
		case '\t':
			esc = "\\t";
			break;
		default:
			snprintf(hex, sizeof(hex), "\\u%04x", c);
			esc = hex;
		}
		buf_add(b, esc, strlen(esc));
		run = s + 1;
	}
	buf_add(b, run, (size_t)(s - run));
	buf_add(b, "\"", 1);
}

/* The separator and the name of the next field (no name inside an array). */
static void put_name(struct log_line *l, const char *name)
{
	if (l->comma)
		buf_add(&l->b, ",", 1);
	if (name) {
		put_string(&l->b, name);
		buf_add(&l->b, ":", 1);
	}
	l->comma = true;
}

bool log_line_begin(struct log_line *l, enum log_level lv, const char *event)
{
	if (!log_enabled(lv))
		return false;
	log_line_begin_always(l, lv, event);
	return true;
}

void log_line_begin_always(struct log_line *l, enum log_level lv, const char *event)
{
	char ts[40];

	buf_init(&l->b, LOG_LINE_MAX);
	l->comma = false;
	buf_add(&l->b, "{", 1);
	log_timestamp(ts, sizeof(ts));
	log_line_str(l, "time", ts);
	log_line_str(l, "level", log_level_name(lv));
	log_line_str(l, "event", event);
}

void log_line_str(struct log_line *l, const char *name, const char *value)
{
	if (!value)
		return;
	put_name(l, name);
	put_string(&l->b, value);
}

void log_line_int(struct log_line *l, const char *name, long long v)
{
	put_name(l, name);
	buf_addf(&l->b, "%lld", v);
}

void log_line_ms(struct log_line *l, const char *name, double ms)
{
	put_name(l, name);
	buf_addf(&l->b, "%.3f", ms);
}

void log_line_bool(struct log_line *l, const char *name, bool v)
{
	put_name(l, name);
	buf_add(&l->b, v ? "true" : "false", v ? 4 : 5);
}

void log_line_open(struct log_line *l, const char *name, char kind)
{
	put_name(l, name);
	buf_add(&l->b, &kind, 1);
	l->comma = false;
}

void log_line_close(struct log_line *l, char kind)
{
	buf_add(&l->b, &kind, 1);
	l->comma = true;
}

void log_line_lines(struct log_line *l, const char *name, const char *text)
{
	char *copy;

	if (!text)
		return;
	log_line_open(l, name, '[');
	if ((copy = strdup(text))) {
		for (char *p = copy, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
			*nl = '\0';
			log_line_str(l, NULL, p);
		}
		free(copy);
	}
	log_line_close(l, ']');
}

void log_line_raw(struct log_line *l, const char *name, const char *json, size_t len)
{
	put_name(l, name);
	buf_add(&l->b, json, len);
}

void log_line_init(struct log_line *l)
{
	buf_init(&l->b, LOG_LINE_MAX);
	l->comma = false;
	buf_add(&l->b, "{", 1);
}

char *log_line_finish(struct log_line *l, size_t *len)
{
	char *s, *fixed;
	size_t n, bad;

	buf_add(&l->b, "}\n", 2);
	if (!(s = buf_take(&l->b, &n)))
		return NULL;
	bad = first_invalid(s, n);
	if (bad < n) {
		/* repair_utf8's copy has no NUL: add one, as buf_take's had. */
		fixed = repair_utf8(s, n, bad, &n);
		free(s);
		s = fixed ? realloc(fixed, n + 1) : NULL;
		if (!s)
			free(fixed);
		else
			s[n] = '\0';
	}
	if (s)
		*len = n;
	return s;
}

void log_line_end(struct log_line *l)
{
	buf_add(&l->b, "}", 1);
	if (!l->b.failed && l->b.data)
		write_line(l->b.data, l->b.len);
	buf_free(&l->b);
}

void log_msg(const char *level, const char *fmt, ...)
{
	int lv = log_level_parse(level);
	struct log_line l;
	char msg[2048];
	va_list ap;

	if (!log_line_begin(&l, lv < 0 ? LOG_INFO : (enum log_level)lv, NULL))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_line_str(&l, "msg", msg);
	log_line_end(&l);
}

void log_token_hash(const char *token, size_t len, char out[13])
{
	unsigned char md[SECRET_DIGEST_LEN];

	out[0] = '\0';
	if (secret_sha256(token, len, md))
		secret_hex(md, 6, out);
}

/* ------------------------------------------------------ rate-limited warnings */

static double seconds_since(const struct timespec *t0, const struct timespec *now)
{
	return (double)(now->tv_sec - t0->tv_sec) + (double)(now->tv_nsec - t0->tv_nsec) / 1e9;
}

/* Under limit_lock: starts a new window when the current one is a second
 * old; returns how many lines the old window dropped (to be reported) and the
 * seconds it covered. */
static unsigned long long limit_roll(const struct timespec *now, double *covered)
{
	unsigned long long dropped = 0;

	*covered = seconds_since(&limit_start, now);
	if (*covered >= 1.0) {
		dropped = atomic_exchange(&limit_dropped, 0);
		limit_start = *now;
		limit_used = 0;
	}
	return dropped;
}

static void limit_report(unsigned long long dropped, double covered)
{
	if (dropped)
		log_msg("warn", "%llu similar warnings suppressed in the last %.0f s (at most %d a second)",
		        dropped, covered < 1 ? 1 : covered, LOG_LIMITED_PER_S);
}

void log_warn_limited(const char *fmt, ...)
{
	char msg[1024];
	struct timespec now;
	unsigned long long report;
	double covered;
	bool allowed;
	va_list ap;

	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&limit_lock);
	report = limit_roll(&now, &covered);
	allowed = limit_used < LOG_LIMITED_PER_S;
	if (allowed) {
		limit_used++;
	} else {
		atomic_fetch_add(&limit_dropped, 1);
		atomic_fetch_add(&limit_dropped_total, 1);
	}
	pthread_mutex_unlock(&limit_lock);
	limit_report(report, covered);
	if (!allowed)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_msg("warn", "%s", msg);
}

int log_limited_tick(void)
{
	struct timespec now;
	unsigned long long report;
	double covered;

	if (atomic_load(&limit_dropped) == 0)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&limit_lock);
	report = limit_roll(&now, &covered);
	pthread_mutex_unlock(&limit_lock);
	limit_report(report, covered);
	return atomic_load(&limit_dropped) != 0;
}

unsigned long long log_suppressed_total(void)
{
	return atomic_load(&limit_dropped_total);
}
