/*
 * killswitch.c — stopping tokens for one tenant or one user at once.
 *
 * Owns the deny lists in force (one immutable set per tenant with a
 * deny_users file, swapped whole under a read-write lock held by a request
 * only for one lookup), the watcher thread (inotify on each deny file's
 * folder: a change is read once writes have settled, ~100 ms) and the
 * parser of deny files. Writers (configure on the reload thread, the
 * watcher) take one mutex, so a list never goes back to an older read. It
 * must never read a file on a request's time, never let a read that failed
 * empty a list (the last good one stays, logged), never keep a pointer into
 * a configuration, and never log a user id of a list (only counts).
 */
#include "killswitch.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "fileio.h"
#include "grantcache.h"
#include "log.h"
#include "scope.h"

/* What changes a deny file's folder in ways worth a read. IN_CREATE is left
 * out: a new file is empty until written (its close comes next). */
#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ATTRIB | IN_DELETE_SELF)

/* After a change, wait until the folder is quiet this long (writes in
 * several steps), but never longer than the cap: the list applies within a
 * second of the change. */
#define SETTLE_MS     100
#define SETTLE_CAP_MS 400

struct killswitch_set {
	atomic_int refs;
	size_t n;
	char **ids; /* sorted, unique; point into text */
	char *text;
};

/* A tenant's deny file and the list in force. */
struct entry {
	char *tenant;
	char *path; /* as configured (absolute) */
	char *dir;
	int wd; /* its folder's watch, or -1 */
	struct killswitch_set *set;
};

static pthread_rwlock_t table_lock = PTHREAD_RWLOCK_INITIALIZER; /* entries, n_entries, each set */
static pthread_mutex_t update_lock = PTHREAD_MUTEX_INITIALIZER;  /* one writer at a time */
static struct entry *entries;                                    /* sorted by tenant */
static size_t n_entries;

static int ino_fd = -1, wake_fd = -1;
static pthread_t watcher;
static bool watching;
static atomic_ullong reads_ok, reads_failed;

/* ------------------------------------------------------------------ sets */

static int id_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void set_free(struct killswitch_set *s)
{
	free(s->ids);
	free(s->text);
	free(s);
}

static bool space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Splits s->text into ids (each line trimmed, NUL-terminated in place). */
static int split_lines(struct killswitch_set *s, const char *name, size_t len, char *why, size_t whylen)
{
	size_t cap = 0, line = 0;
	char *p = s->text, *end = s->text + len;

	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p)), *a = p, *b = nl ? nl : end;
		line++;
		p = nl ? nl + 1 : end;
		while (a < b && space(*a))
			a++;
		while (b > a && space(b[-1]))
			b--;
		if (a == b || (*a == '#' && (b - a == 1 || space(a[1]))))
			continue;
		if (!scope_user_id_valid(a, (size_t)(b - a))) {
			snprintf(why, whylen,
			         "%s:%zu: not a valid user id (1-256 bytes of UTF-8, no whitespace or "
			         "control characters)",
			         name, line);
			return -1;
		}
		if (s->n == cap) {
			char **grown;
			if (cap >= KILLSWITCH_MAX_USERS) {
				snprintf(why, whylen, "%s: more than %u user ids", name,
				         KILLSWITCH_MAX_USERS);
				return -1;
			}
			cap = cap ? cap * 2 : 64;
			if (!(grown = realloc(s->ids, cap * sizeof(*grown)))) {
				snprintf(why, whylen, "%s: out of memory", name);
				return -1;
			}
			s->ids = grown;
		}
		*b = '\0';
		s->ids[s->n++] = a;
	}
	return 0;
}

struct killswitch_set *killswitch_set_parse(const char *name, const char *text, size_t len, char *why,
                                            size_t whylen)
{
	struct killswitch_set *s = calloc(1, sizeof(*s));
	size_t o = 0;

	if (!s || !(s->text = malloc(len + 1))) {
		snprintf(why, whylen, "%s: out of memory", name);
		goto fail;
	}
	memcpy(s->text, text, len);
	s->text[len] = '\0';
	if (split_lines(s, name, len, why, whylen) != 0)
		goto fail;
	if (s->n)
		qsort(s->ids, s->n, sizeof(*s->ids), id_cmp);
	for (size_t i = 0; i < s->n; i++)
		if (o == 0 || strcmp(s->ids[o - 1], s->ids[i]) != 0)
			s->ids[o++] = s->ids[i];
	s->n = o;
	atomic_init(&s->refs, 1);
	return s;
fail:
	if (s)
		set_free(s);
	return NULL;
}

struct killswitch_set *killswitch_set_load(const char *path, char *why, size_t whylen)
{
	struct killswitch_set *s;
	char *text = NULL, reason[256];
	size_t len = 0;

	if (fileio_read(path, KILLSWITCH_FILE_MAX, 0, &text, &len, reason, sizeof(reason)) != 0) {
		snprintf(why, whylen, "%s: %s", path, reason);
		return NULL;
	}
	s = killswitch_set_parse(path, text, len, why, whylen);
	free(text);
	return s;
}

size_t killswitch_set_size(const struct killswitch_set *s)
{
	return s ? s->n : 0;
}

bool killswitch_set_has(const struct killswitch_set *s, const char *user_id)
{
	return s && s->n && bsearch(&user_id, s->ids, s->n, sizeof(*s->ids), id_cmp);
}

void killswitch_set_ref(struct killswitch_set *s)
{
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void killswitch_set_unref(struct killswitch_set *s)
{
	if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
		set_free(s);
}

static bool set_equal(const struct killswitch_set *a, const struct killswitch_set *b)
{
	if (killswitch_set_size(a) != killswitch_set_size(b))
		return false;
	for (size_t i = 0; i < killswitch_set_size(a); i++)
		if (strcmp(a->ids[i], b->ids[i]) != 0)
			return false;
	return true;
}

static int hash_cmp(const void *a, const void *b)
{
	return memcmp(a, b, GRANTCACHE_KEY_LEN);
}

/* The cached tokens of tenant's users in now but not in before are dropped. */
static void drop_added(const char *tenant, const struct killswitch_set *before,
                       const struct killswitch_set *now)
{
	unsigned char(*h)[GRANTCACHE_KEY_LEN];
	size_t n = 0;

	if (!killswitch_set_size(now) || !(h = malloc(now->n * sizeof(*h))))
		return;
	for (size_t i = 0; i < now->n; i++)
		if (!killswitch_set_has(before, now->ids[i]))
			grantcache_user_hash(tenant, now->ids[i], h[n++]);
	qsort(h, n, sizeof(*h), hash_cmp);
	grantcache_drop_users(tenant, (const unsigned char(*)[GRANTCACHE_KEY_LEN])h, n);
	free(h);
}

/* -------------------------------------------------------------- the table */

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct entry *)a)->tenant, ((const struct entry *)b)->tenant);
}

/* The entry of tenant, or NULL. Either lock held. */
static struct entry *entry_of(const char *tenant)
{
	struct entry key = {.tenant = (char *)tenant};

	return n_entries ? bsearch(&key, entries, n_entries, sizeof(*entries), entry_cmp) : NULL;
}

enum killswitch_verdict killswitch_check(const struct tenant *t, const char *user_id)
{
	const struct entry *e;
	bool denied;

	if (!t->enabled)
		return KILLSWITCH_TENANT_DISABLED;
	if (!t->deny_path)
		return KILLSWITCH_PASS;
	pthread_rwlock_rdlock(&table_lock);
	e = entry_of(t->name);
	/* Not watched yet (the generation is about to serve), or watched for
	 * another file (a generation older than a reload): the load's list. */
	denied =
	    killswitch_set_has(e && strcmp(e->path, t->deny_path) == 0 ? e->set : t->deny_users, user_id);
	pthread_rwlock_unlock(&table_lock);
	return denied ? KILLSWITCH_USER_DENIED : KILLSWITCH_PASS;
}

const char *killswitch_code(enum killswitch_verdict v)
{
	switch (v) {
	case KILLSWITCH_TENANT_DISABLED:
		return "tenant_disabled";
	case KILLSWITCH_USER_DENIED:
		return "user_denied";
	case KILLSWITCH_PASS:
		break;
	}
	return "ok";
}

/* Reads e's file again; a new list replaces the one in force. update_lock held. */
static void reread(struct entry *e)
{
	struct killswitch_set *s, *old;
	char why[512];

	s = killswitch_set_load(e->path, why, sizeof(why));
	if (!s) {
		atomic_fetch_add_explicit(&reads_failed, 1, memory_order_relaxed);
		log_msg("warn", "tenant %s: deny_users: %s; the last list (%zu users) stays in force",
		        e->tenant, why, killswitch_set_size(e->set));
		return;
	}
	atomic_fetch_add_explicit(&reads_ok, 1, memory_order_relaxed);
	if (set_equal(s, e->set)) {
		killswitch_set_unref(s);
		return;
	}
	drop_added(e->tenant, e->set, s);
	pthread_rwlock_wrlock(&table_lock);
	old = e->set;
	e->set = s;
	pthread_rwlock_unlock(&table_lock);
	log_msg("info", "tenant %s: deny_users: %zu users (was %zu), from %s", e->tenant, s->n,
	        killswitch_set_size(old), e->path);
	killswitch_set_unref(old);
}

static void entries_free(struct entry *es, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(es[i].tenant);
		free(es[i].path);
		free(es[i].dir);
		killswitch_set_unref(es[i].set);
	}
	free(es);
}

/* ------------------------------------------------------------ the watcher */

/* The changed folders' watches, up to this many; more: every file is read. */
#define MAX_CHANGED 64

struct changes {
	int wds[MAX_CHANGED];
	size_t n;
	bool all;
};

/* Reads the events waiting on the inotify descriptor into c. */
static void take_events(struct changes *c)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;

	while ((n = read(ino_fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const void *)p;
			size_t k = 0;
			while (k < c->n && c->wds[k] != ev->wd)
				k++;
			if (ev->mask & IN_Q_OVERFLOW)
				c->all = true;
			else if (k == c->n && c->n < MAX_CHANGED)
				c->wds[c->n++] = ev->wd;
			else if (k == c->n)
				c->all = true;
			p += sizeof(*ev) + ev->len;
		}
	}
}

static void *watch_main(void *arg)
{
	struct pollfd fds[2] = {{.fd = ino_fd, .events = POLLIN}, {.fd = wake_fd, .events = POLLIN}};

	(void)arg;
	for (;;) {
		struct changes c = {.n = 0, .all = false};
		struct timespec first;

		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (fds[1].revents)
			break;
		if (!(fds[0].revents & POLLIN))
			continue;
		/* Settle: events within SETTLE_MS of the last extend the wait, up
		 * to the cap (later ones start the next round). */
		first = clock_now();
		do
			take_events(&c);
		while (clock_since_ms(&first) < SETTLE_CAP_MS && poll(fds, 1, SETTLE_MS) > 0);
		pthread_mutex_lock(&update_lock);
		for (size_t i = 0; i < n_entries; i++) {
			bool hit = c.all;
			for (size_t k = 0; k < c.n && !hit; k++)
				hit = entries[i].wd == c.wds[k];
			if (hit)
				reread(&entries[i]);
		}
		pthread_mutex_unlock(&update_lock);
	}
	return NULL;
}

/* The watcher's descriptors and thread, the first time a deny file is
 * configured. update_lock held. Returns 0 or -1 (logged). */
static int watch_start(void)
{
	if (watching)
		return 0;
	ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ino_fd < 0 || wake_fd < 0 || pthread_create(&watcher, NULL, watch_main, NULL) != 0) {
		log_msg("error", "deny_users: cannot watch files (%s): lists change on SIGHUP only",
		        strerror(errno));
		if (ino_fd >= 0)
			close(ino_fd);
		if (wake_fd >= 0)
			close(wake_fd);
		ino_fd = wake_fd = -1;
		return -1;
	}
	pthread_setname_np(watcher, "broker-denywatch");
	watching = true;
	return 0;
}

/* --------------------------------------------------------- configuration */

void killswitch_configure(const struct config *cfg)
{
	struct entry *next = NULL, *old;
	size_t n = 0, n_old;

	pthread_mutex_lock(&update_lock);
	for (size_t i = 0; i < cfg->n_tenants; i++) {
		if (!cfg->tenants[i].enabled)
			grantcache_drop_tenant(cfg->tenants[i].name);
		if (cfg->tenants[i].deny_path)
			n++;
	}
	if (n && !(next = calloc(n, sizeof(*next)))) {
		log_msg("error", "deny_users: out of memory: the lists read at load apply until SIGHUP");
		pthread_mutex_unlock(&update_lock);
		return;
	}
	n = 0;
	for (size_t i = 0; i < cfg->n_tenants; i++) {
		const struct tenant *t = &cfg->tenants[i];
		struct entry *e = &next[n];
		if (!t->deny_path)
			continue;
		e->tenant = strdup(t->name);
		e->path = strdup(t->deny_path);
		e->dir = fileio_dir(t->deny_path);
		e->wd = -1;
		e->set = t->deny_users;
		killswitch_set_ref(e->set);
		n++;
		if (!e->tenant || !e->path || !e->dir) {
			log_msg("error",
			        "deny_users: out of memory: the lists read at load apply until SIGHUP");
			entries_free(next, n);
			pthread_mutex_unlock(&update_lock);
			return;
		}
	}
	if (n)
		qsort(next, n, sizeof(*next), entry_cmp);
	for (size_t i = 0; i < n; i++) {
		const struct entry *was = entry_of(next[i].tenant);
		drop_added(next[i].tenant, was ? was->set : NULL, next[i].set);
	}
	if (n && watch_start() == 0) {
		for (size_t i = 0; i < n; i++) {
			next[i].wd = inotify_add_watch(ino_fd, next[i].dir, WATCH_MASK);
			if (next[i].wd < 0)
				log_msg("warn",
				        "tenant %s: deny_users: cannot watch %s (%s): changes apply on "
				        "SIGHUP only",
				        next[i].tenant, next[i].dir, strerror(errno));
		}
	}
	pthread_rwlock_wrlock(&table_lock);
	old = entries;
	n_old = n_entries;
	entries = next;
	n_entries = n;
	pthread_rwlock_unlock(&table_lock);
	/* Folders no longer watched for any tenant. */
	for (size_t i = 0; i < n_old; i++) {
		bool kept = old[i].wd < 0;
		for (size_t k = 0; k < n && !kept; k++)
			kept = next[k].wd == old[i].wd;
		for (size_t k = 0; k < i && !kept; k++)
			kept = old[k].wd == old[i].wd; /* removed already */
		if (!kept)
			inotify_rm_watch(ino_fd, old[i].wd);
	}
	entries_free(old, n_old);
	/* A change between the load's read and the watch is not lost. */
	for (size_t i = 0; i < n; i++)
		reread(&entries[i]);
	pthread_mutex_unlock(&update_lock);
}

void killswitch_stop(void)
{
	pthread_mutex_lock(&update_lock);
	if (watching) {
		uint64_t one = 1;
		(void)!write(wake_fd, &one, sizeof(one));
		pthread_mutex_unlock(&update_lock);
		pthread_join(watcher, NULL);
		pthread_mutex_lock(&update_lock);
		close(ino_fd);
		close(wake_fd);
		ino_fd = wake_fd = -1;
		watching = false;
	}
	pthread_rwlock_wrlock(&table_lock);
	entries_free(entries, n_entries);
	entries = NULL;
	n_entries = 0;
	pthread_rwlock_unlock(&table_lock);
	pthread_mutex_unlock(&update_lock);
}

void killswitch_counts(unsigned long long *loaded, unsigned long long *failed)
{
	*loaded = atomic_load_explicit(&reads_ok, memory_order_relaxed);
	*failed = atomic_load_explicit(&reads_failed, memory_order_relaxed);
}
