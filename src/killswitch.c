/*
 * killswitch.c — stopping tokens for one tenant or one user at once.
 *
 * Owns the deny lists in force (one immutable set per tenant with a
 * deny_users file, swapped whole under a read-write lock held by a request
 * only for one lookup), the watcher thread (inotify on each deny file's
 * folder: a change is read once writes have settled, ~100 ms; a folder that
 * goes away, as a deployment replacing the folder does, is watched for
 * again every second and read when it is back); the sets
 * and their parser are denyset.c's. Writers (configure on the reload thread, the
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
#include "denyset.h"
#include "fileio.h"
#include "grantcache.h"
#include "log.h"

/* What changes a deny file's folder in ways worth a read. IN_CREATE is left
 * out: a new file is empty until written (its close comes next). */
#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ATTRIB | IN_DELETE_SELF)

/* After a change, wait until the folder is quiet this long (writes in
 * several steps), but never longer than the cap: the list applies within a
 * second of the change. */
#define SETTLE_MS     100
#define SETTLE_CAP_MS 400

/* While a folder is gone (its watch ended), it is looked for this often. */
#define REWATCH_MS 1000

/* A tenant's deny file and the list in force. */
struct entry {
	char *tenant;
	char *path; /* as configured (absolute) */
	char *dir;
	int wd;    /* its folder's watch, or -1 */
	bool lost; /* its folder went away: looked for every REWATCH_MS */
	struct denyset *set;
};

static pthread_rwlock_t table_lock = PTHREAD_RWLOCK_INITIALIZER; /* entries, n_entries, each set */
static pthread_mutex_t update_lock = PTHREAD_MUTEX_INITIALIZER;  /* one writer at a time */
static struct entry *entries;                                    /* sorted by tenant */
static size_t n_entries;

static int ino_fd = -1, wake_fd = -1;
static pthread_t watcher;
static bool watching;
static atomic_ullong reads_ok, reads_failed;

static int hash_cmp(const void *a, const void *b)
{
	return memcmp(a, b, GRANTCACHE_KEY_LEN);
}

/* The cached tokens of tenant's users in now but not in before are dropped. */
static void drop_added(const char *tenant, const struct denyset *before, const struct denyset *now)
{
	unsigned char(*h)[GRANTCACHE_KEY_LEN];
	size_t n = 0;

	if (!denyset_size(now) || !(h = malloc(denyset_size(now) * sizeof(*h))))
		return;
	for (size_t i = 0; i < denyset_size(now); i++)
		if (!denyset_has(before, denyset_id(now, i)))
			grantcache_user_hash(tenant, denyset_id(now, i), h[n++]);
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
	denied = denyset_has(e && strcmp(e->path, t->deny_path) == 0 ? e->set : t->deny_users, user_id);
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
	struct denyset *s, *old;
	char why[512];

	s = denyset_load(e->path, why, sizeof(why));
	if (!s) {
		atomic_fetch_add_explicit(&reads_failed, 1, memory_order_relaxed);
		log_msg("warn", "tenant %s: deny_users: %s; the last list (%zu users) stays in force",
		        e->tenant, why, denyset_size(e->set));
		return;
	}
	atomic_fetch_add_explicit(&reads_ok, 1, memory_order_relaxed);
	if (denyset_equal(s, e->set)) {
		denyset_unref(s);
		return;
	}
	drop_added(e->tenant, e->set, s);
	pthread_rwlock_wrlock(&table_lock);
	old = e->set;
	e->set = s;
	pthread_rwlock_unlock(&table_lock);
	log_msg("info", "tenant %s: deny_users: %zu users (was %zu), from %s", e->tenant, denyset_size(s),
	        denyset_size(old), e->path);
	denyset_unref(old);
}

static void entries_free(struct entry *es, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(es[i].tenant);
		free(es[i].path);
		free(es[i].dir);
		denyset_unref(es[i].set);
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
	bool lost; /* a watch ended (IN_IGNORED): its folder went away */
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
			if (ev->mask & IN_IGNORED)
				c->lost = true;
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

/* Whether a watch of wd still exists: inotify_add_watch on the same folder
 * answers the same wd while it does. update_lock held. */
static bool watch_alive(const struct entry *e)
{
	int wd = inotify_add_watch(ino_fd, e->dir, WATCH_MASK | IN_MASK_ADD);

	return wd >= 0 && wd == e->wd;
}

/* After a watch ended: the entries whose folder is gone lose their watch
 * (logged once); then every folder without a watch is looked for, and one
 * that is back is watched and read. Returns whether any is still missing.
 * update_lock held. */
static bool rewatch(bool lost)
{
	bool missing = false;

	for (size_t i = 0; i < n_entries; i++) {
		struct entry *e = &entries[i];
		if (lost && e->wd >= 0 && !watch_alive(e)) {
			log_msg("warn",
			        "tenant %s: deny_users: the folder %s went away; the last list (%zu users) "
			        "stays in force, and the folder is watched for again every second",
			        e->tenant, e->dir, denyset_size(e->set));
			e->wd = -1;
			e->lost = true;
		}
		if (e->wd >= 0 || !e->lost)
			continue;
		e->wd = inotify_add_watch(ino_fd, e->dir, WATCH_MASK);
		if (e->wd < 0) {
			missing = true;
			continue;
		}
		e->lost = false;
		log_msg("info", "tenant %s: deny_users: watching %s again", e->tenant, e->dir);
		reread(e);
	}
	return missing;
}

static void *watch_main(void *arg)
{
	struct pollfd fds[2] = {{.fd = ino_fd, .events = POLLIN}, {.fd = wake_fd, .events = POLLIN}};
	bool missing = false;

	(void)arg;
	for (;;) {
		struct changes c = {.n = 0, .all = false, .lost = false};
		struct timespec first;
		int rc = poll(fds, 2, missing ? REWATCH_MS : -1);

		if (rc < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (fds[1].revents)
			break;
		if (rc == 0) {
			pthread_mutex_lock(&update_lock);
			missing = rewatch(false);
			pthread_mutex_unlock(&update_lock);
			continue;
		}
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
		if (c.lost || missing)
			missing = rewatch(c.lost);
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
		denyset_ref(e->set);
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
