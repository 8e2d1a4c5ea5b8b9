/*
 * test_redis.c — unit tests for src/redis.c: the AUTH arguments and the key
 * names, and a hostile server's huge reply (connecting is tested against a real redis-server in
 * tests/integration/test_cluster.py; the URL's parsing in test_config.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "redis.h"

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

/* A hostile Redis on 127.0.0.1: answers the first command with answer,
 * then waits (at most 5 s) for the client to go. */
struct hostile {
	int lfd, port;
	const char *answer;
	pthread_t th;
};

static void *hostile_run(void *arg)
{
	struct hostile *h = arg;
	int fd = accept(h->lfd, NULL, NULL);
	char buf[4096];
	struct pollfd pfd;

	if (fd < 0)
		return NULL;
	if (read(fd, buf, sizeof(buf)) > 0 && write(fd, h->answer, strlen(h->answer)) < 0)
		goto out;
	pfd.fd = fd;
	pfd.events = POLLIN;
	while (poll(&pfd, 1, 5000) > 0 && read(fd, buf, sizeof(buf)) > 0)
		;
out:
	close(fd);
	return NULL;
}

static void hostile_start(struct hostile *h, const char *answer)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);

	h->answer = answer;
	h->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(h->lfd >= 0);
	assert_int_equal(bind(h->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(h->lfd, 1), 0);
	assert_int_equal(getsockname(h->lfd, (struct sockaddr *)&a, &alen), 0);
	h->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&h->th, NULL, hostile_run, h), 0);
}

static void hostile_stop(struct hostile *h)
{
	pthread_join(h->th, NULL);
	close(h->lfd);
}

/* A reply announcing two billion elements fails the connection at once
 * (an out-of-memory error from the reader) instead of allocating 16 GB of
 * pointers and waiting for them; a reply of ordinary size still reads. */
static void test_huge_array_refused(void **state)
{
	struct cluster_conf c;
	struct hostile h;
	redisContext *rc;
	redisReply *r;
	char err[256] = "";

	(void)state;
	memset(&c, 0, sizeof(c));
	c.host = "127.0.0.1";
	c.timeout_ms = 3000;

	hostile_start(&h, "*2000000000\r\n");
	c.port = (unsigned short)h.port;
	rc = redis_connect(&c, err, sizeof(err));
	assert_non_null(rc);
	r = redisCommand(rc, "SMEMBERS x");
	assert_null(r);
	/* Refused by the cap, not a timeout after a 16 GB calloc. */
	assert_int_equal(rc->err, REDIS_ERR_OOM);
	redisFree(rc);
	hostile_stop(&h);

	hostile_start(&h, "*2\r\n$3\r\nbob\r\n$5\r\nalice\r\n");
	c.port = (unsigned short)h.port;
	rc = redis_connect(&c, err, sizeof(err));
	assert_non_null(rc);
	r = redisCommand(rc, "SMEMBERS x");
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_int_equal(r->elements, 2);
	freeReplyObject(r);
	redisFree(rc);
	hostile_stop(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_auth_args),
	    cmocka_unit_test(test_keys),
	    cmocka_unit_test(test_huge_array_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
