/*
 * test_redis.c — unit tests for src/redis.c: the AUTH arguments and the key
 * names, a hostile server's huge reply, one dripped a byte at a time, one
 * past the cap; rediss:// against a real TLS redis-server (a test CA made at
 * test time): the right CA and host, another CA, another host name, a
 * server that stalls mid-handshake (plain connections are tested against a
 * real redis-server in tests/integration/test_cluster.py; the URL's parsing
 * in test_config.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis.h>
#include <string.h>

#include "config.h"
#include "redis.h"
#include "redis_fixture.h"
#include "redisio.h"
#include "tmpdir_fixture.h"
#include "trust.h"

static void test_auth_args(void **state)
{
	struct cluster_conf c;
	const char *argv[3];
	size_t lens[3];

	(void)state;
	memset(&c, 0, sizeof(c));
	/* No password: no AUTH at all. */
	assert_int_equal(redis_auth_args(&c, argv, lens), 0);
	assert_int_equal(secret_set(&c.password, "s3cret", 6), 0);
	assert_int_equal(redis_auth_args(&c, argv, lens), 2);
	assert_string_equal(argv[0], "AUTH");
	assert_int_equal(lens[1], 6);
	assert_memory_equal(argv[1], "s3cret", 6);
	/* An ACL user goes before the password. */
	c.user = "broker";
	assert_int_equal(redis_auth_args(&c, argv, lens), 3);
	assert_string_equal(argv[1], "broker");
	assert_int_equal(lens[1], 6);
	assert_memory_equal(argv[2], "s3cret", 6);
	secret_clear(&c.password);
}

static void test_keys(void **state)
{
	struct cluster_conf c;
	char out[64], tiny[16];

	(void)state;
	memset(&c, 0, sizeof(c));
	c.name = "prod";
	assert_int_equal(redis_key(&c, "deny:acme", out, sizeof(out)), 0);
	assert_string_equal(out, "courier-broker:prod:deny:acme");
	/* Cut short is an error, never a shorter key. */
	assert_int_equal(redis_key(&c, "deny:acme", tiny, sizeof(tiny)), -1);
}

/* SMEMBERS x on rc. */
static redisReply *smembers(struct redis_conn *rc)
{
	const char *argv[2] = {"SMEMBERS", "x"};
	size_t lens[2] = {8, 1};

	return redis_command(rc, 2, argv, lens);
}

/* A reply announcing two billion elements fails the connection at once
 * (an out-of-memory error from the reader) instead of allocating 16 GB of
 * pointers and waiting for them; a reply of ordinary size still reads. */
static void test_huge_array_refused(void **state)
{
	struct cluster_conf c;
	struct hostile h = {0};
	struct redis_conn *rc;
	redisReply *r;
	char err[256] = "";

	(void)state;
	memset(&c, 0, sizeof(c));
	c.host = "127.0.0.1";
	c.timeout_ms = 3000;

	h.answer = "*2000000000\r\n";
	assert_int_equal(hostile_start(&h), 0);
	c.port = (unsigned short)h.port;
	rc = redis_connect(&c, REDIS_REPLY_MAX_LARGE, err, sizeof(err));
	assert_non_null(rc);
	r = smembers(rc);
	assert_null(r);
	/* Refused by the cap, not a timeout after a 16 GB calloc. */
	assert_non_null(strstr(redis_error(rc), "too many elements"));
	redis_close(rc);
	hostile_stop(&h);

	h.answer = "*2\r\n$3\r\nbob\r\n$5\r\nalice\r\n";
	assert_int_equal(hostile_start(&h), 0);
	c.port = (unsigned short)h.port;
	rc = redis_connect(&c, REDIS_REPLY_MAX_LARGE, err, sizeof(err));
	assert_non_null(rc);
	r = smembers(rc);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_int_equal(r->elements, 2);
	freeReplyObject(r);
	redis_close(rc);
	hostile_stop(&h);
}

/* A reply dripped a byte at a time keeps coming, so no single read times
 * out: the whole reply must be there within the timeout, or the command
 * fails as a stalled Redis would. */
static void test_dripped_reply_times_out(void **state)
{
	static char drip[256];
	struct hostile h = {.answer = drip, .drip_ms = 5};
	struct cluster_conf c;
	struct redis_conn *rc;
	char err[256] = "";

	(void)state;
	snprintf(drip, sizeof(drip), "$100000000\r\n%0200d", 0);
	memset(&c, 0, sizeof(c));
	c.host = "127.0.0.1";
	c.timeout_ms = 300;
	assert_int_equal(hostile_start(&h), 0);
	c.port = (unsigned short)h.port;
	rc = redis_connect(&c, REDIS_REPLY_MAX_LARGE, err, sizeof(err));
	assert_non_null(rc);
	assert_null(smembers(rc));
	assert_non_null(strstr(redis_error(rc), "reply not whole within 300 ms"));
	redis_close(rc);
	hostile_stop(&h);
	assert_true(h.peer_closed);
}

/* A reply growing past the connection's cap before it is whole fails at
 * once, whatever the timeout. */
static void test_reply_over_cap(void **state)
{
	char *big = malloc(300000);
	struct hostile h = {.answer = big};
	struct cluster_conf c;
	struct redis_conn *rc;
	char err[256] = "";

	(void)state;
	assert_non_null(big);
	memset(big, 'a', 299999);
	big[299999] = '\0';
	memcpy(big, "$1000000\r\n", 10);
	memset(&c, 0, sizeof(c));
	c.host = "127.0.0.1";
	c.timeout_ms = 60000;
	assert_int_equal(hostile_start(&h), 0);
	c.port = (unsigned short)h.port;
	rc = redis_connect(&c, REDIS_REPLY_MAX_SMALL, err, sizeof(err));
	assert_non_null(rc);
	assert_null(smembers(rc));
	assert_non_null(strstr(redis_error(rc), "grew past 65536 bytes"));
	redis_close(rc);
	hostile_stop(&h);
	assert_true(h.peer_closed);
	free(big);
}

/* c for rediss://127.0.0.1:port, trusting dir/ca beside the system's. */
static void tls_conf(struct cluster_conf *c, const char *dir, const char *ca, int port, unsigned timeout_ms)
{
	char path[512], err[256];
	struct x509_store_st *store;

	memset(c, 0, sizeof(*c));
	c->host = "127.0.0.1";
	c->port = (unsigned short)port;
	c->timeout_ms = timeout_ms;
	c->tls = true;
	snprintf(path, sizeof(path), "%s/%s", dir, ca);
	store = trust_load(path, err, sizeof(err));
	assert_non_null(store);
	c->tls_ctx = redisio_tls_new(store, err, sizeof(err));
	trust_free(store);
	assert_non_null(c->tls_ctx);
}

/* rediss:// against redis-server with TLS: AUTH, SELECT and commands with
 * the test CA; refused (the reason named) with another CA or a certificate
 * for another name; a server that takes the ClientHello and says nothing
 * fails at the connect timeout. */
static void test_tls(void **state)
{
	struct redis_server s;
	struct cluster_conf c;
	struct redis_conn *rc;
	struct hostile h = {.answer = ""};
	char dir[64] = "/tmp/test_redis.XXXXXX", err[512] = "";
	redisReply *r;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(tls_make_files(dir), 0);
	assert_int_equal(redis_start_tls(&s, 0, "tls-pass", dir, "server", false), 0);

	tls_conf(&c, dir, "ca.pem", s.port, 3000);
	assert_int_equal(secret_set(&c.password, "tls-pass", 8), 0);
	c.db = 4;
	rc = redis_connect(&c, REDIS_REPLY_MAX_SMALL, err, sizeof(err));
	if (!rc)
		fail_msg("%s", err);
	r = redis_command(rc, 3, (const char *[]){"SADD", "x", "alice"}, (const size_t[]){4, 1, 5});
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	freeReplyObject(r);
	r = smembers(rc);
	assert_non_null(r);
	assert_int_equal(r->elements, 1);
	assert_string_equal(r->element[0]->str, "alice");
	freeReplyObject(r);
	redis_close(rc);
	secret_clear(&c.password);
	redisio_tls_free(c.tls_ctx);

	/* Another CA: the certificate is refused, and said so. */
	tls_conf(&c, dir, "other-ca.pem", s.port, 3000);
	assert_null(redis_connect(&c, REDIS_REPLY_MAX_SMALL, err, sizeof(err)));
	assert_non_null(strstr(err, "certificate is refused"));
	redisio_tls_free(c.tls_ctx);
	redis_stop(&s);

	/* The right CA, a certificate for redis.elsewhere.test. */
	assert_int_equal(redis_start_tls(&s, 0, NULL, dir, "wronghost", false), 0);
	tls_conf(&c, dir, "ca.pem", s.port, 3000);
	assert_null(redis_connect(&c, REDIS_REPLY_MAX_SMALL, err, sizeof(err)));
	assert_non_null(strstr(err, "IP address mismatch"));
	redisio_tls_free(c.tls_ctx);
	redis_stop(&s);

	/* Stalled mid-handshake: the connect timeout ends it. */
	assert_int_equal(hostile_start(&h), 0);
	tls_conf(&c, dir, "ca.pem", h.port, 300);
	assert_null(redis_connect(&c, REDIS_REPLY_MAX_SMALL, err, sizeof(err)));
	assert_non_null(strstr(err, "no TLS handshake within 300 ms"));
	hostile_stop(&h);
	assert_true(h.peer_closed);
	redisio_tls_free(c.tls_ctx);
	tmpdir_remove(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_auth_args),          cmocka_unit_test(test_keys),
	    cmocka_unit_test(test_huge_array_refused), cmocka_unit_test(test_dripped_reply_times_out),
	    cmocka_unit_test(test_reply_over_cap),     cmocka_unit_test(test_tls),
	};
	signal(SIGPIPE, SIG_IGN); /* as the broker and deny/allow do */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
