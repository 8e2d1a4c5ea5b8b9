/*
 * test_redisloop.c — unit tests for src/redisloop.c against a real redis-server.
 *
 * Owns the proof of the connection's life on an epoll set: it connects,
 * authenticates and selects its database without blocking; a command's
 * callback runs once, with the reply or NULL at its deadline (a stalled
 * Redis); a lost Redis is reconnected by itself when it returns; a wrong
 * password never makes it ready.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "redis_fixture.h"

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

static struct rloop *open_rl(int epfd, int port, const char *password, int db)
{
	struct rloop_conf conf = {.host = "127.0.0.1",
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
	struct redis_server s;
	int epfd = epoll_create1(0);
	struct rloop *rl;
	struct answer a;

	(void)state;
	assert_int_equal(redis_start(&s, 0, NULL), 0);
	rl = open_rl(epfd, s.port, NULL, 0);
	assert_true(drive(rl, epfd, is_ready, rl, 5000));
	kill(s.pid, SIGSTOP);
	assert_int_equal(command(rl, &a, 50, 1, (const char *[]){"PING"}), 0);
	assert_true(drive(rl, epfd, answered, &a, 5000));
	assert_true(a.null_reply);
	assert_false(rloop_ready(rl));
	kill(s.pid, SIGCONT);
	assert_true(drive(rl, epfd, is_ready, rl, 5000));
	assert_int_equal(command(rl, &a, 2000, 1, (const char *[]){"PING"}), 0);
	assert_true(drive(rl, epfd, answered, &a, 5000));
	assert_string_equal(a.text, "PONG");
	drive(rl, epfd, never, NULL, 50);
	assert_int_equal(a.calls, 1);
	rloop_free(rl);
	redis_stop(&s);
	close(epfd);
}

/* Redis killed: pending commands end NULL; restarted on its port, the
 * connection is made again without anyone asking. */
static void test_killed_and_restarted(void **state)
{
	struct redis_server s;
	int epfd = epoll_create1(0), port;
	struct rloop *rl;
	struct answer a;

	(void)state;
	assert_int_equal(redis_start(&s, 0, NULL), 0);
	port = s.port;
	rl = open_rl(epfd, port, NULL, 0);
	assert_true(drive(rl, epfd, is_ready, rl, 5000));
	kill(s.pid, SIGSTOP);
	assert_int_equal(command(rl, &a, 5000, 3, (const char *[]){"BLPOP", "nothing", "0"}), 0);
	redis_stop(&s);
	assert_true(drive(rl, epfd, answered, &a, 5000));
	assert_true(a.null_reply);
	assert_false(drive(rl, epfd, is_ready, rl, 200));
	assert_int_equal(redis_start(&s, port, NULL), 0);
	assert_true(drive(rl, epfd, is_ready, rl, 5000));
	rloop_free(rl);
	redis_stop(&s);
	close(epfd);
}

/* A slow Redis (it answers, late): a command that misses its deadline
 * ends NULL, but Redis answered something since it was sent, so the
 * connection stays (src/redisloop.c's stalled-vs-slow rule), its late reply
 * is dropped, and the next command uses the same connection. */
static void test_slow_keeps_connection(void **state)
{
	struct redis_server s;
	int epfd = epoll_create1(0);
	struct rloop *rl;
	struct answer quick, slow, after;
	char name[64];

	(void)state;
	assert_int_equal(redis_start(&s, 0, NULL), 0);
	rl = open_rl(epfd, s.port, NULL, 0);
	assert_true(drive(rl, epfd, is_ready, rl, 5000));
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
	rloop_free(rl);
	redis_stop(&s);
	close(epfd);
}

/* Freed with a command pending: its callback runs, NULL. */
static void test_free_ends_pending(void **state)
{
	struct redis_server s;
	int epfd = epoll_create1(0);
	struct rloop *rl;
	struct answer a;

	(void)state;
	assert_int_equal(redis_start(&s, 0, NULL), 0);
	rl = open_rl(epfd, s.port, NULL, 0);
	assert_true(drive(rl, epfd, is_ready, rl, 5000));
	assert_int_equal(command(rl, &a, 5000, 1, (const char *[]){"PING"}), 0);
	rloop_free(rl);
	assert_int_equal(a.calls, 1);
	assert_true(a.null_reply);
	redis_stop(&s);
	close(epfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_auth_select_and_command), cmocka_unit_test(test_wrong_password_never_ready),
	    cmocka_unit_test(test_deadline_then_reconnect), cmocka_unit_test(test_killed_and_restarted),
	    cmocka_unit_test(test_free_ends_pending),       cmocka_unit_test(test_slow_keeps_connection),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
