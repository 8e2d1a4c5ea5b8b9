/*
 * killswitch.h — stopping tokens for one tenant or one user at once.
 *
 * A tenant with `enabled = false` gets no token at all; a tenant's
 * `deny_users = { file = ... }` lists users (one id a line) who get none,
 * whatever its policy says. Both are checked by the C core before the policy
 * runs. Each deny file is read at every load (a file that cannot be read or
 * holds an invalid id fails the load) and again within a second of changing
 * on disk (inotify on its folder, one watcher thread); a later read that
 * fails keeps the last list and says so in the log. Lists are immutable
 * sets swapped under a lock held only for the swap and the lookup: no file
 * is read on a request's time. The users a new list adds lose their cached
 * tokens (grantcache.h); a disabled tenant loses all of its.
 */
#ifndef BROKER_KILLSWITCH_H
#define BROKER_KILLSWITCH_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct tenant;

enum killswitch_verdict {
	KILLSWITCH_PASS,            /* the policy decides */
	KILLSWITCH_TENANT_DISABLED, /* enabled = false */
	KILLSWITCH_USER_DENIED,     /* on the tenant's deny list */
};

/*
 * The verdict for user_id on tenant t (of any generation still serving):
 * enabled first, then the newest list of the tenant's deny file (the one
 * read at load when the watcher has none). Safe from any thread; never
 * reads a file.
 */
enum killswitch_verdict killswitch_check(const struct tenant *t, const char *user_id);

/* The answer's error code of a verdict ("user_denied", "tenant_disabled"). */
const char *killswitch_code(enum killswitch_verdict v);

/*
 * Makes cfg's tenants the ones watched (before cfg's generation serves):
 * takes each deny file's list read at load, watches the files' folders,
 * reads each file once more (a change between the load and the watch is not
 * lost), drops the cached tokens of newly denied users and of disabled
 * tenants. Starts the watcher thread the first time a tenant has a deny
 * file. Keeps no pointer into cfg.
 */
void killswitch_configure(const struct config *cfg);

/* Stops the watcher thread and forgets every list (at exit). */
void killswitch_stop(void);

/* The watcher's reads so far (for tests): lists swapped in, reads failed. */
void killswitch_counts(unsigned long long *loaded, unsigned long long *failed);

#endif
