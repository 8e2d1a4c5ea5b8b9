/*
 * test_redisloop.c — unit tests for src/redisloop.c against a real redis-server.
 *
 * Owns the proof of the connection's life on an epoll set: it connects,
 * authenticates and selects its database without blocking; a command's
 * callback runs once, with the reply or NULL at its deadline (a stalled
 * Redis); a lost Redis is reconnected by itself when it returns; a wrong
 * password never makes it ready. Over TLS (rediss://, a test CA made at
 * test time): ready with the right CA and host, never with another CA or
 * another host name; with a client certificate when Redis asks for one,
 * never without; a server that stalls mid-handshake is dropped at the
 * connect timeout. A reply dripped a byte at a time, or growing past the
 * cap, costs the connection (a fake Redis: redis_fixture.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "fileio.h"
#include "redis.h"
#include "redis_fixture.h"
#include "redisio.h"
#include "secret.h"
#include "tls.h"
#include "tmpdir_fixture.h"
#include "trust.h"

struct answer {
	int calls;
	bool null_reply;
	char text[64];
};

static void on_answer(const struct redisReply *r, void *arg)
{
	struct answer *a = arg;

	a->calls++;
	a->null_reply = r == NULL;
	if (r && r->str)
		snprintf(a->text, sizeof(a->text), "%s", r->str);
	else if (r && r->type == REDIS_REPLY_INTEGER)
		snprintf(a->text, sizeof(a->text), "%lld", r->integer);
}

static bool answered(void *arg)
{
	return ((struct answer *)arg)->calls > 0;
}

static int command(struct rloop *rl, struct answer *a, unsigned timeout_ms, int argc, const char **argv)
{
	size_t len[8];

	for (int i = 0; i < argc; i++)
		len[i] = strlen(argv[i]);
	memset(a, 0, sizeof(*a));
	return rloop_command(rl, argc, argv, len, timeout_ms, on_answer, a);
}

static struct rloop *open_rl_tls(int epfd, int port, const char *password, int db, struct ssl_ctx_st *tls)
{
	struct rloop_conf conf = {.host = "127.0.0.1",
	                          .tls = tls,
	                          .port = port,
	                          .db = db,
	                          .password = password,
	                          .password_len = password ? strlen(password) : 0,
	                          .connect_timeout_ms = 500,
	                          .backoff_min_ms = 20,
	                          .backoff_max_ms = 100,
	                          .name = "test"};
	char err[200];
	static int tag;
	struct rloop *rl = rloop_new(epfd, &tag, &conf, err, sizeof(err));

	assert_non_null(rl);
	return rl;
}

static struct rloop *open_rl(int epfd, int port, const char *password, int db)
{
	return open_rl_tls(epfd, port, password, db, NULL);
}

/* A TLS context trusting the system's anchors and dir/ca (redisio.h). */
static struct ssl_ctx_st *tls_ctx(const char *dir, const char *ca)
{
	char path[512], err[256];
	struct x509_store_st *store;
	struct ssl_ctx_st *ctx;

	snprintf(path, sizeof(path), "%s/%s", dir, ca);
	store = trust_load(path, err, sizeof(err));
	assert_non_null(store);
	ctx = redisio_tls_new(store, err, sizeof(err));
	trust_free(store);
	assert_non_null(ctx);
	return ctx;
}

/* A temporary folder with the test CA's files. */
static void tls_dir(char *dir)
{
	strcpy(dir, "/tmp/test_redisloop.XXXXXX");
	assert_non_null(mkdtemp(dir));
	assert_int_equal(tls_make_files(dir), 0);
}

/* The common start: a redis-server without a password, and a connection
 * to it on its own epoll set, ready. A test may stop the server or free
 * the connection itself (it sets rl to NULL); the teardown ends the rest. */
struct ready {
	struct redis_server s;
	int epfd;
	struct rloop *rl;
};

static int ready_setup(void **state)
{
	static struct ready r;

	memset(&r, 0, sizeof(r));
	r.epfd = epoll_create1(0);
	if (r.epfd < 0 || redis_start(&r.s, 0, NULL) != 0)
		return -1;
	r.rl = open_rl(r.epfd, r.s.port, NULL, 0);
	if (!drive(r.rl, r.epfd, is_ready, r.rl, 5000))
		return -1;
	*state = &r;
	return 0;
}

static int ready_teardown(void **state)
{
	struct ready *r = *state;

	if (r->rl)
		rloop_free(r->rl);
	redis_stop(&r->s);
	close(r->epfd);
	return 0;
}

/* Password, database, a command and its reply; the key is in database 3. */
static void test_auth_select_and_command(void **state)
{
	struct redis_server s;
	int epfd = epoll_create1(0);
	struct rloop *rl;
	struct answer a;
	char cmd[200];
	FILE *f;

	(void)state;
	assert_int_equal(redis_start(&s, 0, "s3cret pass"), 0);
	rl = open_rl(epfd, s.port, "s3cret pass", 3);
	assert_true(drive(rl, epfd, is_ready, rl, 5000));
	assert_int_equal(command(rl, &a, 2000, 3, (const char *[]){"SET", "k", "v1"}), 0);
	assert_int_equal(a.calls, 0); /* never inside rloop_command */
	assert_true(drive(rl, epfd, answered, &a, 5000));
	assert_string_equal(a.text, "OK");
	snprintf(cmd, sizeof(cmd), "redis-cli -p %d -a 's3cret pass' --no-auth-warning -n 3 GET k", s.port);
	f = popen(cmd, "r");
	assert_non_null(f);
	assert_non_null(fgets(cmd, sizeof(cmd), f));
	pclose(f);
	assert_string_equal(cmd, "v1\n");
	/* One callback per command, even after more turns. */
	drive(rl, epfd, never, NULL, 50);
	assert_int_equal(a.calls, 1);
	rloop_free(rl);
	redis_stop(&s);
	close(epfd);
}

/* A wrong password: never ready, and commands are refused at once. */
static void test_wrong_password_never_ready(void **state)
{
	struct redis_server s;
	int epfd = epoll_create1(0);
	struct rloop *rl;
	struct answer a;

	(void)state;
	assert_int_equal(redis_start(&s, 0, "right"), 0);
	rl = open_rl(epfd, s.port, "wrong", 0);
	assert_false(drive(rl, epfd, is_ready, rl, 400));
	assert_int_equal(command(rl, &a, 100, 1, (const char *[]){"PING"}), -1);
	rloop_free(rl);
	redis_stop(&s);
	close(epfd);
}

/* A stalled Redis (SIGSTOP): the command ends NULL at its deadline, the
 * connection goes, and it comes back by itself once Redis does. */
static void test_deadline_then_reconnect(void **state)
{
	struct ready *r = *state;
	struct rloop *rl = r->rl;
	int epfd = r->epfd;
	struct answer a;

	kill(r->s.pid, SIGSTOP);
	assert_int_equal(command(rl, &a, 50, 1, (const char *[]){"PING"}), 0);
	assert_true(drive(rl, epfd, answered, &a, 5000));
	assert_true(a.null_reply);
	assert_false(rloop_ready(rl));
	kill(r->s.pid, SIGCONT);
	assert_true(drive(rl, epfd, is_ready, rl, 5000));
	assert_int_equal(command(rl, &a, 2000, 1, (const char *[]){"PING"}), 0);
	assert_true(drive(rl, epfd, answered, &a, 5000));
	assert_string_equal(a.text, "PONG");
	drive(rl, epfd, never, NULL, 50);
	assert_int_equal(a.calls, 1);
}

/* Redis killed: pending commands end NULL; restarted on its port, the
 * connection is made again without anyone asking. */
static void test_killed_and_restarted(void **state)
{
	struct ready *r = *state;
	struct rloop *rl = r->rl;
	int epfd = r->epfd, port = r->s.port;
	struct answer a;

	kill(r->s.pid, SIGSTOP);
	assert_int_equal(command(rl, &a, 5000, 3, (const char *[]){"BLPOP", "nothing", "0"}), 0);
	redis_stop(&r->s);
	assert_true(drive(rl, epfd, answered, &a, 5000));
	assert_true(a.null_reply);
	assert_false(drive(rl, epfd, is_ready, rl, 200));
	assert_int_equal(redis_start(&r->s, port, NULL), 0);
	assert_true(drive(rl, epfd, is_ready, rl, 5000));
}

/* A slow Redis (it answers, late): a command that misses its deadline
 * ends NULL, but Redis answered something since it was sent, so the
 * connection stays (src/redisloop.c's stalled-vs-slow rule), its late reply
 * is dropped, and the next command uses the same connection. */
static void test_slow_keeps_connection(void **state)
{
	struct ready *r = *state;
	struct rloop *rl = r->rl;
	int epfd = r->epfd;
	struct answer quick, slow, after;
	char name[64];

	/* The first answers after 150 ms, within its deadline; the second
	 * (its reply behind it, 400 ms later) misses its 300 ms deadline. */
	assert_int_equal(command(rl, &quick, 5000, 3, (const char *[]){"BLPOP", "nothing", "0.15"}), 0);
	assert_int_equal(command(rl, &slow, 300, 3, (const char *[]){"BLPOP", "nothing", "0.4"}), 0);
	assert_true(drive(rl, epfd, answered, &slow, 5000));
	assert_int_equal(quick.calls, 1);
	assert_false(quick.null_reply);
	assert_true(slow.null_reply);
	assert_true(rloop_ready(rl)); /* slow, not stalled: kept */
	/* The late reply arrives and is dropped; the same connection answers. */
	drive(rl, epfd, never, NULL, 400);
	assert_int_equal(slow.calls, 1);
	assert_true(rloop_ready(rl));
	assert_int_equal(command(rl, &after, 2000, 3, (const char *[]){"CLIENT", "SETNAME", "x"}), 0);
	assert_true(drive(rl, epfd, answered, &after, 5000));
	assert_string_equal(after.text, "OK");
	/* One connection all along: Redis counts one client (ours) named x. */
	assert_int_equal(command(rl, &after, 2000, 2, (const char *[]){"CLIENT", "GETNAME"}), 0);
	assert_true(drive(rl, epfd, answered, &after, 5000));
	snprintf(name, sizeof(name), "%s", after.text);
	assert_string_equal(name, "x");
}

/* Freed with a command pending: its callback runs, NULL. */
static void test_free_ends_pending(void **state)
{
	struct ready *r = *state;
	struct answer a;

	assert_int_equal(command(r->rl, &a, 5000, 1, (const char *[]){"PING"}), 0);
	rloop_free(r->rl);
	r->rl = NULL;
	assert_int_equal(a.calls, 1);
	assert_true(a.null_reply);
}

/* rediss://: the handshake with the test CA, AUTH, a command and its
 * reply, all on the loop's epoll. */
static void test_tls_ready_and_command(void **state)
{
	struct redis_server s;
	int epfd = epoll_create1(0);
	struct ssl_ctx_st *ctx;
	struct rloop *rl;
	struct answer a;
	char dir[64];

	(void)state;
	tls_dir(dir);
	assert_int_equal(redis_start_tls(&s, 0, "tls pass", dir, "server", false), 0);
	ctx = tls_ctx(dir, "ca.pem");
	rl = open_rl_tls(epfd, s.port, "tls pass", 2, ctx);
	redisio_tls_free(ctx); /* the connection holds its own reference */
	assert_true(drive(rl, epfd, is_ready, rl, 5000));
	assert_int_equal(command(rl, &a, 2000, 3, (const char *[]){"SET", "k", "over tls"}), 0);
	assert_true(drive(rl, epfd, answered, &a, 5000));
	assert_string_equal(a.text, "OK");
	assert_int_equal(command(rl, &a, 2000, 2, (const char *[]){"GET", "k"}), 0);
	assert_true(drive(rl, epfd, answered, &a, 5000));
	assert_string_equal(a.text, "over tls");
	rloop_free(rl);
	redis_stop(&s);
	close(epfd);
	tmpdir_remove(dir);
}

/* Makes dir/<name>.pem and .key the identity ctx presents (tls.h). */
static void use_identity(struct ssl_ctx_st *ctx, const char *dir, const char *name)
{
	char path[512], why[256], *cert, *key;
	size_t cert_len, key_len;
	struct secret k = {0};

	snprintf(path, sizeof(path), "%s/%s.pem", dir, name);
	assert_int_equal(fileio_read(path, 1 << 20, 0, &cert, &cert_len, why, sizeof(why)), 0);
	snprintf(path, sizeof(path), "%s/%s.key", dir, name);
	assert_int_equal(fileio_read(path, 1 << 20, 0, &key, &key_len, why, sizeof(why)), 0);
	assert_int_equal(secret_set(&k, key, key_len), 0);
	assert_int_equal(tls_client_identity(ctx, cert, cert_len, &k, why, sizeof(why)), 0);
	secret_clear(&k);
	free(cert);
	free(key);
}

/* A connection to port trusting dir/ca, presenting dir/<identity>.pem
 * (or nothing when NULL): never ready within 1.5 s. */
static void never_ready(int epfd, int port, const char *dir, const char *ca, const char *identity)
{
	struct ssl_ctx_st *ctx = tls_ctx(dir, ca);
	struct rloop *rl;

	if (identity)
		use_identity(ctx, dir, identity);
	rl = open_rl_tls(epfd, port, NULL, 0, ctx);
	assert_false(drive(rl, epfd, is_ready, rl, 1500));
	rloop_free(rl);
	redisio_tls_free(ctx);
}

/* Another CA, or a certificate for another host name: never ready. */
static void test_tls_refused(void **state)
{
	struct redis_server s;
	int epfd = epoll_create1(0);
	char dir[64];

	(void)state;
	tls_dir(dir);
	assert_int_equal(redis_start_tls(&s, 0, NULL, dir, "server", false), 0);
	never_ready(epfd, s.port, dir, "other-ca.pem", NULL);
	redis_stop(&s);

	/* The right CA, but the certificate names redis.elsewhere.test. */
	assert_int_equal(redis_start_tls(&s, 0, NULL, dir, "wronghost", false), 0);
	never_ready(epfd, s.port, dir, "ca.pem", NULL);
	redis_stop(&s);
	close(epfd);
	tmpdir_remove(dir);
}

/* A Redis that asks for a client certificate (tls-auth-clients yes):
 * never ready without one, nor with one its CA did not sign (the server's
 * own CA's other-ca pair is not one: a self-signed CA certificate); ready
 * with the client pair, and a command answered. */
static void test_tls_client_certificate(void **state)
{
	struct redis_server s;
	int epfd = epoll_create1(0);
	struct ssl_ctx_st *ctx;
	struct rloop *rl;
	struct answer a;
	char dir[64];

	(void)state;
	tls_dir(dir);
	assert_int_equal(redis_start_tls(&s, 0, NULL, dir, "server", true), 0);
	never_ready(epfd, s.port, dir, "ca.pem", NULL);
	never_ready(epfd, s.port, dir, "ca.pem", "other-ca");

	ctx = tls_ctx(dir, "ca.pem");
	use_identity(ctx, dir, "client");
	rl = open_rl_tls(epfd, s.port, NULL, 0, ctx);
	redisio_tls_free(ctx);
	assert_true(drive(rl, epfd, is_ready, rl, 5000));
	assert_int_equal(command(rl, &a, 2000, 1, (const char *[]){"PING"}), 0);
	assert_true(drive(rl, epfd, answered, &a, 5000));
	assert_string_equal(a.text, "PONG");
	rloop_free(rl);
	redis_stop(&s);
	close(epfd);
	tmpdir_remove(dir);
}

/* A server that takes the ClientHello and never answers: the connection
 * is dropped (closed) at the connect timeout, not kept waiting. */
static void test_tls_stalled_handshake(void **state)
{
	struct hostile h = {.answer = ""};
	int epfd = epoll_create1(0);
	struct ssl_ctx_st *ctx;
	struct rloop *rl;
	char dir[64];

	(void)state;
	tls_dir(dir);
	assert_int_equal(hostile_start(&h), 0);
	ctx = tls_ctx(dir, "ca.pem");
	rl = open_rl_tls(epfd, h.port, NULL, 0, ctx); /* connect timeout: 500 ms */
	assert_false(drive(rl, epfd, is_ready, rl, 1500));
	rloop_free(rl);
	hostile_stop(&h);
	assert_true(h.peer_closed);
	redisio_tls_free(ctx);
	close(epfd);
	tmpdir_remove(dir);
}

/* A reply dripped a byte at a time: the command ends NULL at its deadline
 * and the connection goes with it (bytes kept coming, so the old "answered
 * nothing" rule alone kept it, growing without bound). */
static void test_dripped_reply_drops(void **state)
{
	static char drip[256];
	struct hostile h = {.answer = drip, .drip_ms = 5, .pong = true};
	int epfd = epoll_create1(0);
	struct rloop *rl;
	struct answer a;

	(void)state;
	snprintf(drip, sizeof(drip), "$100000000\r\n%0200d", 0);
	assert_int_equal(hostile_start(&h), 0);
	rl = open_rl(epfd, h.port, NULL, 0);
	assert_true(drive(rl, epfd, is_ready, rl, 5000));
	assert_int_equal(command(rl, &a, 300, 2, (const char *[]){"GET", "k"}), 0);
	assert_true(drive(rl, epfd, answered, &a, 5000));
	assert_true(a.null_reply);
	assert_false(rloop_ready(rl));
	rloop_free(rl);
	hostile_stop(&h);
	assert_true(h.peer_closed);
	close(epfd);
}

/* A reply that grows past the loop's cap (64 KiB) before it is whole ends
 * the connection at once, long before its command's deadline. */
static void test_reply_over_cap_drops(void **state)
{
	char *big = malloc(300000);
	struct hostile h = {.answer = big, .pong = true};
	int epfd = epoll_create1(0);
	struct rloop *rl;
	struct answer a;

	(void)state;
	assert_non_null(big);
	memset(big, 'a', 299999);
	big[299999] = '\0';
	memcpy(big, "$1000000\r\n", 10);
	assert_int_equal(hostile_start(&h), 0);
	rl = open_rl(epfd, h.port, NULL, 0);
	assert_true(drive(rl, epfd, is_ready, rl, 5000));
	assert_int_equal(command(rl, &a, 60000, 2, (const char *[]){"GET", "k"}), 0);
	assert_true(drive(rl, epfd, answered, &a, 10000));
	assert_true(a.null_reply);
	assert_false(rloop_ready(rl));
	rloop_free(rl);
	hostile_stop(&h);
	/* We hung up, not the fake (it would after 5 s of silence). */
	assert_true(h.peer_closed);
	close(epfd);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_auth_select_and_command),
	    cmocka_unit_test(test_wrong_password_never_ready),
	    cmocka_unit_test_setup_teardown(test_deadline_then_reconnect, ready_setup, ready_teardown),
	    cmocka_unit_test_setup_teardown(test_killed_and_restarted, ready_setup, ready_teardown),
	    cmocka_unit_test_setup_teardown(test_free_ends_pending, ready_setup, ready_teardown),
	    cmocka_unit_test_setup_teardown(test_slow_keeps_connection, ready_setup, ready_teardown),
	    cmocka_unit_test(test_tls_ready_and_command),
	    cmocka_unit_test(test_tls_refused),
	    cmocka_unit_test(test_tls_client_certificate),
	    cmocka_unit_test(test_tls_stalled_handshake),
	    cmocka_unit_test(test_dripped_reply_drops),
	    cmocka_unit_test(test_reply_over_cap_drops),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
