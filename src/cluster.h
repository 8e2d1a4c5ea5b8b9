/*
 * cluster.h — the cluster's shared deny list, as this broker sees it.
 *
 * With `cluster` in the configuration, one subscriber thread follows the
 * deny list in Redis: it loads every tenant's set on each (re)connect,
 * then applies each change `courier-broker deny`/`allow` announces, into an
 * immutable snapshot swapped atomically. The request path asks
 * cluster_denied, which reads that snapshot and never calls Redis. When
 * Redis is unreachable the last snapshot stays in force, the thread
 * reconnects with backoff, and cluster_status says so (/readyz, /metrics).
 *
 * Keys (all under "courier-broker:<cluster.name>:"):
 *   deny:<tenant>   a set of user ids the tenant refuses tokens for
 *   deny-tenants    a set of the tenant names that have a deny set
 *   deny-changed    the channel a change is published on (message: the tenant)
 */
#ifndef BROKER_CLUSTER_H
#define BROKER_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>

struct cluster_conf;

#define CLUSTER_DENY_KEY     "deny:"
#define CLUSTER_DENY_TENANTS "deny-tenants"
#define CLUSTER_DENY_CHANNEL "deny-changed"

enum cluster_status { CLUSTER_NONE = -1, CLUSTER_DOWN = 0, CLUSTER_UP = 1 };

/* Starts the subscriber for c (copied: a reload does not change it), and
 * waits up to c->timeout_ms for its first load, so a broker whose Redis is
 * up serves the deny list from its first request; one whose Redis is down
 * starts anyway. Returns 0, or -1 with a reason in err. Once only. */
int cluster_start(const struct cluster_conf *c, char *err, size_t errlen);

/* Stops the subscriber (within a second) and frees the list. Safe without
 * cluster_start. */
void cluster_stop(void);

/* Whether user_id is on tenant's shared deny list (both NUL-terminated).
 * Any thread; never waits on Redis. false without a cluster. */
bool cluster_denied(const char *tenant, const char *user_id);

/* CLUSTER_NONE without a cluster; else whether the subscriber is connected. */
enum cluster_status cluster_status(void);

#endif
