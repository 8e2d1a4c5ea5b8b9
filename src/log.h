/*
 * log.h — one JSON line per event on stderr.
 *
 * Lines are built field by field with an ordered writer (struct log_line):
 * time, level and event (or msg) first, the rest in the order the caller
 * writes them, `/` never escaped. Lines below the level set by `log_level`
 * are skipped before they are built. Nothing secret may be passed in: no key,
 * no credential, no token (tokens only as log_token_hash).
 */
#ifndef BROKER_LOG_H
#define BROKER_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* The lowest level written (default LOG_INFO); any thread, any time. */
void log_set_level(enum log_level lv);
bool log_enabled(enum log_level lv);

/* "debug", "info", "warn" or "error" → its level; -1 for anything else. */
int log_level_parse(const char *name);
const char *log_level_name(enum log_level lv);

/* One line being built: begin, fields, end (which writes and frees it). */
struct log_line {
	struct buf b;
	bool comma; /* a value precedes the next field */
};

/* Starts {"time":..., "level":..., "event":...} (no event when NULL).
 * Returns false, with nothing to end, when lv is below the log level. */
bool log_line_begin(struct log_line *l, enum log_level lv, const char *event);
/* The same whatever the log level (the start line: supervisors and scripts
 * wait for it). */
void log_line_begin_always(struct log_line *l, enum log_level lv, const char *event);
/* Fields: name NULL inside an array. A NULL string is skipped. */
void log_line_str(struct log_line *l, const char *name, const char *value);
void log_line_int(struct log_line *l, const char *name, long long v);
void log_line_ms(struct log_line *l, const char *name, double ms); /* to the microsecond */
void log_line_bool(struct log_line *l, const char *name, bool v);
/* An array of the lines of text ("a\nb\n" → ["a","b"]); nothing when NULL. */
void log_line_lines(struct log_line *l, const char *name, const char *text);
/* Nesting: kind '[' or '{'; close with the matching ']' or '}'. */
void log_line_open(struct log_line *l, const char *name, char kind);
void log_line_close(struct log_line *l, char kind);
/* A value already encoded as JSON (json: a whole JSON text). */
void log_line_raw(struct log_line *l, const char *name, const char *json, size_t len);
/* Starts an empty line with no time, level or event (for another file:
 * the audit log). Ends with log_line_finish. */
void log_line_init(struct log_line *l);
/* Closes the line and hands it over with its "\n" (valid UTF-8, malloc'ed,
 * the caller frees it); NULL when it could not be built. */
char *log_line_finish(struct log_line *l, size_t *len);
/* Writes the line (dropped if it could not be built) and frees it. */
void log_line_end(struct log_line *l);

/* RFC 3339 UTC time with milliseconds, e.g. "2026-11-23T10:00:00.123Z". */
void log_timestamp(char *buf, size_t len);

/* A system line: {"time":..., "level":..., "msg":...}; level is a
 * log_level_parse name. */
void log_msg(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * A warning a client can cause at will (one per connection it drops, say):
 * at most LOG_LIMITED_PER_S such lines a second per process, whatever the
 * thread; the rest are only counted, and one "N similar warnings
 * suppressed" line reports them once the second is over.
 */
#define LOG_LIMITED_PER_S 5
void log_warn_limited(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes the "suppressed" line when its second is over. Returns true while
 * suppressed lines still wait to be reported (call again within a second).
 * Costs one atomic load when nothing waits: event loops call it every turn. */
int log_limited_tick(void);

/* Warnings log_warn_limited dropped since start (for /metrics). */
unsigned long long log_suppressed_total(void);

/* From now on (on) the calling thread's lines wait in its buffer until
 * log_flush (or until the buffer is full); off flushes and ends that. */
void log_batch(int on);

/* Writes the calling thread's waiting lines, if any. */
void log_flush(void);

/* First 12 hex chars of SHA-256(token): enough to correlate, useless to replay. */
void log_token_hash(const char *token, size_t len, char out[13]);

#endif
