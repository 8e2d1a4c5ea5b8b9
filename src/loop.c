/*
 * loop.c — the event loops, the acceptor, the listeners' setup and the drain.
 *
 * Owns the threads of the front: `threads` event loops, each owning one MHD
 * daemon (external epoll mode), one Courier client (libcurl multi), a small
 * lua_State with only cjson for answers and log lines, and the policy engines
 * (gen_engines) of the generations its requests began on, and one acceptor
 * that hands each new connection to the loop holding the fewest (keep-alive
 * clients stay where they land: a loop that drew more of them would be the
 * bottleneck). A request lives on one loop from its first byte to its answer:
 * the Courier call that suspends it runs on the same loop, whose completion
 * resumes it there, so no request is handed between threads.
 *
 * Floods: the acceptor caps the connections one address holds
 * (max_connections_per_ip, ipcap.c); each loop closes connections whose
 * request does not arrive whole within request_timeout_ms, however slowly it
 * trickles (MHD's own timeout is an idle one, reset by every byte), by a sweep
 * of two deadline-ordered lists, never by per-byte work; MHD's warnings go
 * through the log's rate limit. With admin_listen, one more MHD daemon on its
 * own thread, socket and connection budget serves only the probes and /metrics.
 *
 * Beside it: client.c (a connection's record and the deadline lists),
 * ipcap.c (the per-address counts), listen.c (sockets, the admin listener).
 *
 * It must never know a route (the front's handlers come in struct
 * loop_routes), never hand a request to another thread, and never stop a
 * daemon while a connection is suspended.
 */
#include "loop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "clock.h"
#include "clusterrate.h"
#include "config.h"
#include "courier.h"
#include "gen.h"
#include "ipcap.h"
#include "json.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "ratelease.h"
#include "redis.h"
#include "redisloop.h"
#include "sharedcache.h"
#include "tls.h"

/* MHD's memory a client connection (its request's headers, and buffers). */
#define LOOP_MEMORY (32 * 1024)

/* An idle connection's deadline is this past MHD's own idle timeout. */
#define IDLE_GRACE_MS 1000

/* The longest a loop waits while the log holds suppressed warnings. */
#define LOG_TICK_MS 1000

/* The acceptor's back-off: every loop full or out of descriptors, and while
 * a connection waits for a loop with room. */
#define ACCEPT_FULL_WAIT_US 10000
#define ACCEPT_ROOM_WAIT_US 1000

/* The drain's polls: how often it looks, how many looks while it aborts
 * Courier calls (aborting again every DRAIN_ABORT_EVERY), and how many while
 * the last answers reach their sockets. */
#define DRAIN_POLL_US     5000
#define DRAIN_ABORT_POLLS 200
#define DRAIN_ABORT_EVERY 20
#define DRAIN_FLUSH_POLLS 100

/* What the drain asks of a loop (bits of loop.cmd). */
enum { CMD_ABORT = 1, CMD_STOP = 2 };

/*
 * One event loop: its thread, MHD daemon and Courier client, its JSON state
 * and its policy engines. The engines name their generation by id only: the
 * loop holds no reference, so an idle loop never keeps an old generation
 * (and its keys) alive: the generation is freed when its last request ends,
 * and an idle engine's config pointer may then dangle. It is never
 * dereferenced again: an engine is used only by a request that pinned it
 * and holds its generation, and policy_engine_free does not read the
 * config. Ids are never reused, unlike addresses.
 *
 * Only the token pipeline's decision runs on an engine (the body and claims
 * the policy reads, and the decision). Every answer, error body and log line
 * is built on the loop's own JSON state, which no generation owns: answering
 * never needs, and never builds, a policy engine.
 */
struct loop {
	struct http_server *srv;
	struct MHD_Daemon *d;
	struct courier_client *cc;
	struct rloop *redis;       /* the cluster's Redis (cluster), or NULL */
	char redis_prefix[100];    /* its keys' prefix, "courier-broker:<name>:" */
	unsigned redis_wait_ms;    /* cluster.redis.rate_timeout_ms */
	struct sharedcache *share; /* with cluster.cache_key: the shared token cache's keys */
	struct ratelease *leases;  /* with cluster.rate_lease_ms: the shared rate limits' leases */
	int epfd, wakefd;          /* the loop's epoll set; wake-ups from the acceptor and the drain */
	atomic_int cmd;            /* CMD_* bits the loop has not acted on yet */
	bool resumed;              /* a connection was resumed: MHD must run before waiting */
	pthread_t thread;
	bool running;
	struct gen_engines engines;
	lua_State *json; /* cjson only: answers, error bodies, log lines */
	void *scratch;   /* the routes' (routes.scratch_size bytes) */

	/* Connections: held by the daemon (counted by on_connection), and
	 * handed over by the acceptor (the list, under lock) but not yet added. */
	atomic_int live, pending;
	int limit; /* its share of max_connections */
	pthread_mutex_t lock;
	struct client *handed;

	/* The loop thread's alone. */
	struct client *adding;         /* the record MHD_add_connection is adding */
	struct client_watch deadlines; /* the request deadlines */
};

struct http_server {
	struct loop_routes routes;
	struct loop *loops;
	size_t n_loops;
	int listen_fd;
	pthread_t acceptor;
	bool accepting;
	atomic_bool stop_accept;
	size_t next_loop;    /* the acceptor's: where its search for the emptiest loop starts */
	atomic_int active;   /* token requests between arrival and completion */
	atomic_int upstream; /* of those, waiting on Courier */
	atomic_bool draining;
	atomic_bool stopping; /* drain deadline passed: no new Courier call may start */

	struct ipcap ips;
	atomic_ullong refused_per_ip; /* closed at accept: max_connections_per_ip */
	atomic_ullong cut_slow;       /* closed by the request deadline */

	struct MHD_Daemon *admin; /* admin_listen's, or NULL */
};

/* ---------------------------------------------------- request deadlines */

/* Unwatches c, gives its per-IP count back and frees it (not its socket). */
static void client_free(struct loop *lp, struct client *c)
{
	client_set_phase(&lp->deadlines, c, CLIENT_NONE);
	ipcap_release(&lp->srv->ips, c->ip);
	free(c);
}

/* Called when a request line has been read. A later request on a kept-alive
 * connection starts its own deadline now (the first one's started at
 * accept, so trickling the first request line gains nothing). */
static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct loop *lp = cls;
	struct client *c = client_of(conn);

	(void)uri;
	if (c && c->phase == CLIENT_IDLE)
		client_set_phase(&lp->deadlines, c, CLIENT_RECEIVING);
	return NULL; /* con_cls stays NULL: the route knows its first call by that */
}

/* A request is over (answered, or the client left): the connection is idle
 * until the next request line, which must come within the idle timeout. */
static void on_request_done(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe)
{
	struct loop *lp = cls;
	struct client *c = client_of(conn);

	if (c && lp->deadlines.request_ms)
		client_set_phase(&lp->deadlines, c, CLIENT_IDLE);
	lp->srv->routes.on_completed(cls, conn, con_cls, toe);
}

/* Closes a connection under MHD's feet the safe way: shutting the socket
 * down makes MHD read its end and close it on this loop, as if the client
 * had left. */
static void cut(void *ctx, struct client *c, const char *why)
{
	struct loop *lp = ctx;
	char ip[INET6_ADDRSTRLEN];

	shutdown(c->fd, SHUT_RDWR);
	atomic_fetch_add(&lp->srv->cut_slow, 1);
	listen_addr_text(&c->addr, ip, sizeof(ip));
	log_warn_limited("http: closed a connection from %s: %s", ip, why);
}

/* ------------------------------------------------------------- the loops */

/* MHD's connection notifications: the loop's count of live connections,
 * and the connection's record (MHD calls STARTED inside MHD_add_connection,
 * and CLOSED exactly once after it). */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
	struct loop *lp = cls;
	struct client *c;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		atomic_fetch_add(&lp->live, 1);
		c = lp->adding;
		lp->adding = NULL;
		*socket_context = c;
		if (c) {
			c->conn = conn;
			if (lp->deadlines.request_ms)
				client_set_phase(&lp->deadlines, c, CLIENT_RECEIVING);
		}
		return;
	}
	atomic_fetch_sub(&lp->live, 1);
	c = *socket_context;
	*socket_context = NULL;
	if (c)
		client_free(lp, c);
}

/* Gives the connections the acceptor handed over to the loop's daemon. */
static void take_handed(struct loop *lp)
{
	struct client *c;

	pthread_mutex_lock(&lp->lock);
	c = lp->handed;
	lp->handed = NULL;
	pthread_mutex_unlock(&lp->lock);
	while (c) {
		struct client *next = c->next;
		c->next = NULL;
		/* On failure MHD closes the socket itself; a record on_connection
		 * did not take is not MHD's. Uncounted as pending only after
		 * on_connection counted it as live: the acceptor may see a loop
		 * fuller than it is, never emptier. */
		lp->adding = c;
		MHD_add_connection(lp->d, c->fd, (const struct sockaddr *)&c->addr, c->addrlen);
		if (lp->adding == c) {
			lp->adding = NULL;
			client_free(lp, c);
		}
		atomic_fetch_sub(&lp->pending, 1);
		c = next;
	}
}

/* The loop's thread: waits on MHD's epoll set, the Courier client's and the
 * drain's wake-ups; runs whichever is ready. */
static void *loop_run(void *arg)
{
	struct loop *lp = arg;
	struct epoll_event evs[8];
	bool looked = false;

	log_batch(1);
	for (;;) {
		MHD_UNSIGNED_LONG_LONG mt;
		bool mhd_ready = false, courier_ready = false;
		uint32_t redis_events = 0;
		int timeout = -1, n = 0, cmd;
		long long due = client_sweep(&lp->deadlines, cut, lp);

		if (MHD_get_timeout(lp->d, &mt) == MHD_YES)
			timeout = mt > INT_MAX ? INT_MAX : (int)mt;
		if (due >= 0 && (timeout < 0 || due < timeout))
			timeout = (int)due;
		/* Suppressed warnings are reported within about a second. */
		if (log_limited_tick() && (timeout < 0 || timeout > LOG_TICK_MS))
			timeout = LOG_TICK_MS;
		if (lp->redis) {
			long long rd = rloop_due_ms(lp->redis);
			if (rd >= 0 && (timeout < 0 || rd < timeout))
				timeout = rd > INT_MAX ? INT_MAX : (int)rd;
		}
		if (lp->resumed || courier_due(lp->cc))
			timeout = 0;
		/* Work is pending (MHD's own ready list, a resumed connection, a
		 * call to start): do it without asking epoll first, but ask every
		 * other turn, so that the other sources are never starved. */
		if (timeout != 0 || looked)
			n = epoll_wait(lp->epfd, evs, 8, timeout);
		looked = timeout == 0 && !looked;
		if (n == 0 && timeout >= 0)
			mhd_ready = true; /* a connection's timeout, or work already pending */
		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr == lp->cc) {
				courier_ready = true;
			} else if (evs[i].data.ptr == &lp->redis) {
				redis_events = evs[i].events;
			} else if (evs[i].data.ptr == lp->d) {
				mhd_ready = true;
			} else {
				uint64_t v;
				ssize_t r = read(lp->wakefd, &v, sizeof(v));
				(void)r;
				take_handed(lp);
				mhd_ready = true; /* a new connection may have sent already */
			}
		}
		cmd = atomic_exchange(&lp->cmd, 0);
		if (cmd & CMD_STOP)
			break;
		if (cmd & CMD_ABORT)
			courier_abort_all(lp->cc);
		if (courier_ready || courier_due(lp->cc))
			courier_run(lp->cc, courier_ready);
		/* Replies and deadlines: the requests they resume run below. */
		if (lp->redis)
			rloop_run(lp->redis, redis_events);
		if (mhd_ready || lp->resumed) {
			lp->resumed = false;
			MHD_run(lp->d);
		}
		/* Commands MHD's requests just queued: written now. */
		if (lp->redis)
			rloop_flush(lp->redis);
		/* Calls MHD just started: send them now, not after another wait. */
		if (courier_due(lp->cc))
			courier_run(lp->cc, false);
		log_flush(); /* this turn's lines: one write, before waiting */
	}
	log_batch(0);
	return NULL;
}

static void loop_wake(struct loop *lp)
{
	uint64_t one = 1;
	ssize_t n = write(lp->wakefd, &one, sizeof(one));

	(void)n;
}

static void loop_tell(struct loop *lp, int cmd)
{
	atomic_fetch_or(&lp->cmd, cmd);
	loop_wake(lp);
}

/* The connections a loop holds or was handed. */
static int loop_load(struct loop *lp)
{
	return atomic_load(&lp->live) + atomic_load(&lp->pending);
}

/* The loop with the fewest connections, held or handed over, or NULL when
 * every loop holds its share of max_connections. Ties go round: a pick
 * (take) moves the search's start on; a look does not. */
static struct loop *emptiest(struct http_server *s, bool take)
{
	struct loop *best = NULL;
	int least = INT_MAX;

	for (size_t k = 0; k < s->n_loops; k++) {
		struct loop *lp = &s->loops[(s->next_loop + k) % s->n_loops];
		int load = loop_load(lp);
		if (load < lp->limit && load < least) {
			least = load;
			best = lp;
		}
	}
	if (take)
		s->next_loop = (s->next_loop + 1) % s->n_loops;
	return best;
}

/* The acceptor's thread: blocks in accept until the drain shuts the
 * listening socket down, handing each connection to the emptiest loop. */
static void *accept_run(void *arg)
{
	struct http_server *s = arg;
	bool warned = false;

	while (!atomic_load(&s->stop_accept)) {
		struct loop *lp;
		struct client *h;
		bool was_empty;
		int fd;

		/* Every loop full: new connections wait in the kernel's backlog
		 * until one closes, as when MHD accepts by itself. */
		if (!emptiest(s, false) || !(h = malloc(sizeof(*h)))) {
			usleep(ACCEPT_FULL_WAIT_US);
			continue;
		}
		h->addrlen = sizeof(h->addr);
		fd = accept4(s->listen_fd, (struct sockaddr *)&h->addr, &h->addrlen,
		             SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			int e = errno;
			free(h);
			if (e == EINTR || e == ECONNABORTED || e == EPROTO)
				continue;
			if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
				/* Out of descriptors or memory: let connections close. */
				if (!warned)
					log_msg("warn", "http: cannot accept connections: %s", strerror(e));
				warned = true;
				usleep(ACCEPT_FULL_WAIT_US);
				continue;
			}
			break; /* shut down by the drain (EINVAL), or unusable */
		}
		warned = false;
		memset((char *)h + offsetof(struct client, ip), 0, sizeof(*h) - offsetof(struct client, ip));
		h->fd = fd;
		if (s->ips.cap && !(h->ip = ipcap_take(&s->ips, &h->addr))) {
			char ip[INET6_ADDRSTRLEN];
			listen_addr_text(&h->addr, ip, sizeof(ip));
			close(fd);
			free(h);
			atomic_fetch_add(&s->refused_per_ip, 1);
			log_warn_limited(
			    "http: refused a connection from %s: it holds max_connections_per_ip "
			    "(%u)",
			    ip, s->ips.cap);
			continue;
		}
		/* Usually a loop has room (loads only fall while accept waits, but
		 * for a connection being counted twice for a moment): else the
		 * connection waits here, as it would in the backlog. */
		while (!(lp = emptiest(s, true)) && !atomic_load(&s->stop_accept))
			usleep(ACCEPT_ROOM_WAIT_US);
		if (!lp) {
			close(fd);
			ipcap_release(&s->ips, h->ip);
			free(h);
			break;
		}
		atomic_fetch_add(&lp->pending, 1);
		pthread_mutex_lock(&lp->lock);
		was_empty = lp->handed == NULL;
		h->next = lp->handed;
		lp->handed = h;
		pthread_mutex_unlock(&lp->lock);
		/* A list that was not empty already has a wake-up pending. */
		if (was_empty)
			loop_wake(lp);
	}
	return NULL;
}

/* Stops accepting (connections already handed over are served). */
static void stop_accepting(struct http_server *s)
{
	if (s->accepting) {
		atomic_store(&s->stop_accept, true);
		shutdown(s->listen_fd, SHUT_RDWR); /* wakes accept with EINVAL */
		pthread_join(s->acceptor, NULL);
		s->accepting = false;
	}
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		s->listen_fd = -1;
	}
}

/* Stops the loop's thread (if it runs) and frees what it owns. */
static void loop_free(struct loop *lp)
{
	if (lp->running) {
		loop_tell(lp, CMD_STOP);
		pthread_join(lp->thread, NULL);
		lp->running = false;
	}
	while (lp->handed) {
		struct client *c = lp->handed;
		lp->handed = c->next;
		close(c->fd);
		client_free(lp, c);
	}
	/* First: its pending commands' callbacks resume their connections. */
	rloop_free(lp->redis);
	lp->redis = NULL;
	ratelease_free(lp->leases); /* after the callbacks that read it */
	lp->leases = NULL;
	if (lp->share) {
		sharedcache_wipe(lp->share);
		free(lp->share);
		lp->share = NULL;
	}
	/* Closes the loop's connections: their on_completed runs here. */
	if (lp->d)
		MHD_stop_daemon(lp->d);
	courier_client_free(lp->cc);
	gen_engines_free(&lp->engines);
	if (lp->json)
		lua_close(lp->json);
	if (lp->epfd >= 0)
		close(lp->epfd);
	if (lp->wakefd >= 0)
		close(lp->wakefd);
	pthread_mutex_destroy(&lp->lock);
	free(lp->scratch);
}

static void server_free(struct http_server *s)
{
	/* First: its probes read the loops. */
	if (s->admin)
		MHD_stop_daemon(s->admin);
	stop_accepting(s);
	for (size_t i = 0; i < s->n_loops; i++)
		loop_free(&s->loops[i]);
	/* Last: closing the loops' connections gave their counts back. */
	ipcap_free(&s->ips);
	free(s->loops);
	free(s);
	/* No listener runs: no handshake can use a pair any more. */
	tls_shutdown();
}

static int watch(int epfd, int fd, void *tag)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = tag};

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* The loop's connection to the cluster's Redis (it connects from the loop's
 * first turn on). Without one (a host that does not resolve now) the loop
 * serves on its own buckets, as when Redis is down. */
static void cluster_connect(struct loop *lp, const struct cluster_conf *c)
{
	struct rloop_conf rc = {.host = c->host,
	                        .port = c->port,
	                        .db = (int)c->db,
	                        .user = c->user,
	                        .password = (const char *)c->password.data,
	                        .password_len = c->password.len,
	                        .connect_timeout_ms = c->timeout_ms,
	                        .backoff_min_ms = 100,
	                        .backoff_max_ms = 5000,
	                        .name = "cluster",
	                        .tls = c->tls ? c->tls_ctx : NULL,
	                        .reply_max = REDIS_REPLY_MAX_SMALL};
	size_t len;
	const char *script = clusterrate_script(&len);
	const char *argv[3] = {"SCRIPT", "LOAD", script};
	size_t lens[3] = {6, 4, len};
	char err[256];

	if (redis_key(c, "", lp->redis_prefix, sizeof(lp->redis_prefix)) != 0)
		return;
	lp->redis_wait_ms = c->rate_timeout_ms ? c->rate_timeout_ms : 50;
	lp->redis = rloop_new(lp->epfd, &lp->redis, &rc, err, sizeof(err));
	if (!lp->redis) {
		log_msg("warn", "%s: shared rate limits off on this loop until a restart", err);
		return;
	}
	if (rloop_on_connect(lp->redis, 3, argv, lens) != 0) {
		rloop_free(lp->redis);
		lp->redis = NULL;
		return;
	}
	if (c->rate_lease_ms)
		lp->leases = ratelease_new(c->rate_lease_ms); /* NULL: one call a request */
	if (c->cache_key.data && (lp->share = malloc(sizeof(*lp->share))) &&
	    sharedcache_init(lp->share, c->cache_key.data, c->cache_key.len) != 0) {
		free(lp->share);
		lp->share = NULL;
	}
}

/* Sets up loop i and starts its thread. */
static int loop_start(struct http_server *s, size_t i, const struct config *cfg, unsigned flags,
                      struct MHD_OptionItem *tls_opts, char *err, size_t errlen)
{
	struct loop *lp = &s->loops[i];
	size_t n = s->n_loops;
	/* Shares of the connection limits, as MHD's own thread pool splits them. */
	unsigned conns = (unsigned)(cfg->max_connections / n + (i < cfg->max_connections % n));
	unsigned upstream = (unsigned)(cfg->courier_max_connections / n);
	const union MHD_DaemonInfo *di;
	char name[16];

	lp->limit = conns ? (int)conns : 1;
	lp->deadlines.request_ms = cfg->request_timeout_ms;
	/* A second past MHD's own idle timeout: an idle connection is gone by
	 * then, so what is left trickles a request line. */
	lp->deadlines.idle_ms = (long long)cfg->connection_timeout_s * 1000 + IDLE_GRACE_MS;

	lp->scratch = calloc(1, s->routes.scratch_size ? s->routes.scratch_size : 1);
	lp->json = luaL_newstate();
	if (lp->json && json_open(lp->json) != 0) {
		lua_close(lp->json);
		lp->json = NULL;
	}
	if (!lp->scratch || !lp->json) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	lp->cc = courier_client_new(upstream ? upstream : 1, err, errlen);
	if (!lp->cc)
		return -1;
	lp->d = MHD_start_daemon(
	    flags, 0, NULL, NULL, s->routes.on_request, lp, MHD_OPTION_EXTERNAL_LOGGER, listen_mhd_log, NULL,
	    MHD_OPTION_UNESCAPE_CALLBACK, listen_keep_escaped, NULL, MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned)cfg->connection_timeout_s, MHD_OPTION_CONNECTION_LIMIT, (unsigned)lp->limit,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)LOOP_MEMORY, MHD_OPTION_NOTIFY_COMPLETED,
	    on_request_done, lp, MHD_OPTION_NOTIFY_CONNECTION, on_connection, lp, MHD_OPTION_URI_LOG_CALLBACK,
	    on_request_line, lp, MHD_OPTION_ARRAY, tls_opts, MHD_OPTION_END);
	if (!lp->d) {
		snprintf(err, errlen, "cannot start the HTTP server");
		return -1;
	}
	di = MHD_get_daemon_info(lp->d, MHD_DAEMON_INFO_EPOLL_FD);
	lp->epfd = epoll_create1(EPOLL_CLOEXEC);
	lp->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!di || lp->epfd < 0 || lp->wakefd < 0 || watch(lp->epfd, di->epoll_fd, lp->d) != 0 ||
	    watch(lp->epfd, courier_fd(lp->cc), lp->cc) != 0 ||
	    watch(lp->epfd, lp->wakefd, &lp->wakefd) != 0) {
		snprintf(err, errlen, "cannot set up the HTTP event loop");
		return -1;
	}
	if (cfg->cluster.enabled)
		cluster_connect(lp, &cfg->cluster);
	if (pthread_create(&lp->thread, NULL, loop_run, lp) != 0) {
		snprintf(err, errlen, "cannot start the HTTP threads");
		return -1;
	}
	snprintf(name, sizeof(name), "broker-loop-%zu", i);
	pthread_setname_np(lp->thread, name);
	lp->running = true;
	return 0;
}

struct http_server *loop_server_start(const struct config *cfg, const struct loop_routes *routes, char *err,
                                      size_t errlen)
{
	struct http_server *s = calloc(1, sizeof(*s));
	struct sockaddr_storage ss;
	socklen_t sl;
	unsigned flags =
	    MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET;
	struct MHD_OptionItem tls_opts[3] = {
	    {MHD_OPTION_END, 0, NULL}, {MHD_OPTION_END, 0, NULL}, {MHD_OPTION_END, 0, NULL}};

	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	sl = listen_address(cfg->listen_host, cfg->listen_port, &ss);
	if (!sl) {
		snprintf(err, errlen, "listen: %s is not an IP address (or localhost)", cfg->listen_host);
		free(s);
		return NULL;
	}
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	s->routes = *routes;
	s->n_loops = cfg->threads > 0 ? cfg->threads : 1;
	s->listen_fd = -1;
	s->loops = calloc(s->n_loops, sizeof(*s->loops));
	if (!s->loops || ipcap_init(&s->ips, cfg->max_connections_per_ip, cfg->max_connections) != 0) {
		snprintf(err, errlen, "out of memory");
		if (s->loops)
			ipcap_free(&s->ips);
		free(s->loops);
		free(s);
		return NULL;
	}
	for (size_t i = 0; i < s->n_loops; i++) {
		s->loops[i].srv = s;
		s->loops[i].epfd = s->loops[i].wakefd = -1;
		pthread_mutex_init(&s->loops[i].lock, NULL);
	}
	s->listen_fd = listen_socket(cfg->listen_host, cfg->listen_port, &ss, sl, err, errlen);
	if (s->listen_fd >= 0 && cfg->admin_host)
		s->admin = listen_admin_start(cfg->admin_host, cfg->admin_port, routes->on_admin_request, s,
		                              err, errlen);
	if (s->listen_fd < 0 || (cfg->admin_host && !s->admin)) {
		server_free(s);
		return NULL;
	}
	/* HTTPS: each handshake asks tls.c for the pair installed last, so a
	 * reload rotates it without touching the daemons. */
	if (cfg->tls.enabled) {
		struct tls_creds *c =
		    tls_prepare(cfg->tls.cert_pem, cfg->tls.cert_len, &cfg->tls.key, err, errlen);
		if (!c) {
			server_free(s);
			return NULL;
		}
		tls_install(c);
		flags |= MHD_USE_TLS;
		tls_opts[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_CERT_CALLBACK, 0, tls_cert_callback()};
		tls_opts[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES};
	}
	for (size_t i = 0; i < s->n_loops; i++) {
		if (loop_start(s, i, cfg, flags, tls_opts, err, errlen) != 0) {
			server_free(s);
			return NULL;
		}
	}
	if (pthread_create(&s->acceptor, NULL, accept_run, s) != 0) {
		snprintf(err, errlen, "cannot start the HTTP threads");
		server_free(s);
		return NULL;
	}
	pthread_setname_np(s->acceptor, "broker-accept");
	s->accepting = true;
	return s;
}

unsigned short loop_server_port(struct http_server *s)
{
	return listen_port(s->listen_fd);
}

static void tell_all(struct http_server *s, int cmd)
{
	for (size_t i = 0; i < s->n_loops; i++)
		loop_tell(&s->loops[i], cmd);
}

int loop_server_drain(struct http_server *s, unsigned deadline_ms)
{
	struct timespec t0;

	if (!s)
		return 0;
	atomic_store(&s->draining, true);
	stop_accepting(s);
	t0 = clock_now();
	/* Requests already under way finish normally, wherever they are: reading
	 * the body, in the policy, or waiting on Courier. Idle keep-alive
	 * connections are not waited for: MHD_stop_daemon closes them. */
	while (atomic_load(&s->active) > 0 && clock_since_ms(&t0) < deadline_ms)
		usleep(DRAIN_POLL_US);
	atomic_store(&s->stopping, true);
	if (atomic_load(&s->upstream) > 0)
		log_msg("warn", "drain deadline passed with %d requests waiting on Courier: answering 503",
		        atomic_load(&s->upstream));
	/* Bounded: every aborted job resumes its connection at once. Aborting
	 * again now and then catches a job submitted just before stopping was set. */
	for (int i = 0; i < DRAIN_ABORT_POLLS && atomic_load(&s->upstream) > 0; i++) {
		if (i % DRAIN_ABORT_EVERY == 0)
			tell_all(s, CMD_ABORT);
		usleep(DRAIN_POLL_US);
	}
	/* Let the answers just queued reach their sockets. */
	for (int i = 0; i < DRAIN_FLUSH_POLLS && atomic_load(&s->active) > 0; i++)
		usleep(DRAIN_POLL_US);
	/* MHD_stop_daemon with a suspended connection is an API violation: never. */
	if (atomic_load(&s->upstream) > 0) {
		log_msg("error",
		        "%d connections are still suspended after the drain: not stopping the HTTP server",
		        atomic_load(&s->upstream));
		return -1;
	}
	server_free(s);
	return 0;
}

/* ------------------------------------------------ what the routes use */

struct http_server *loop_server(struct loop *lp)
{
	return lp->srv;
}

struct courier_client *loop_courier(struct loop *lp)
{
	return lp->cc;
}

struct rloop *loop_redis(struct loop *lp, const char **prefix, unsigned *wait_ms)
{
	*prefix = lp->redis_prefix;
	*wait_ms = lp->redis_wait_ms;
	return lp->redis;
}

struct sharedcache *loop_sharedcache(struct loop *lp)
{
	return lp->share;
}

struct ratelease *loop_leases(struct loop *lp)
{
	return lp->leases;
}

struct gen_engines *loop_engines(struct loop *lp)
{
	return &lp->engines;
}

lua_State *loop_json(struct loop *lp)
{
	return lp->json;
}

void *loop_scratch(struct loop *lp)
{
	return lp->scratch;
}

void loop_resumed(struct loop *lp)
{
	lp->resumed = true;
}

bool loop_draining(struct http_server *s)
{
	return atomic_load(&s->draining);
}

void loop_request_begin(struct http_server *s)
{
	atomic_fetch_add(&s->active, 1);
}

void loop_request_end(struct http_server *s)
{
	atomic_fetch_sub(&s->active, 1);
}

int loop_upstream_begin(struct http_server *s)
{
	/* Counted before the stopping check (the drain sets stopping before it
	 * reads the count): either the drain sees this call, or it is refused. */
	atomic_fetch_add(&s->upstream, 1);
	if (atomic_load(&s->stopping)) {
		atomic_fetch_sub(&s->upstream, 1);
		return -1;
	}
	return 0;
}

void loop_upstream_end(struct http_server *s)
{
	atomic_fetch_sub(&s->upstream, 1);
}

unsigned loop_upstream_count(struct http_server *s)
{
	return (unsigned)atomic_load(&s->upstream);
}

static int loop_connections(void *ctx, size_t i)
{
	struct http_server *s = ctx;

	return atomic_load(&s->loops[i].live);
}

void loop_metrics_front(struct http_server *s, struct metrics_front *f)
{
	f->ctx = s;
	f->n_loops = s->n_loops;
	f->loop_connections = loop_connections;
	f->refused_per_ip = atomic_load(&s->refused_per_ip);
	f->request_timeouts = atomic_load(&s->cut_slow);
}
