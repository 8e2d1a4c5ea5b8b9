/*
 * fuzz_subscriber.c — libFuzzer driver for the cluster subscriber's
 * handling of what Redis sends (src/cluster.c, included here so that its
 * static functions are reached without a thread or a network): a message on
 * the subscription (on_reply), the SMEMBERS answers it then reads
 * (reload_tenant, tenant_from, list_with) and the whole first load
 * (load_all).
 *
 * The bytes are RESP, as a hostile or broken Redis would write them: the
 * first reply read from them is the message on the subscription; the rest
 * is what the command connection answers, served from a socketpair (closed
 * after the bytes, so a short answer is an error, never a wait). Owns the
 * properties: never a crash, a leak or a hang; every id of the published
 * list is found again by cluster_denied; a failed read never empties the
 * list in force (the last good one stays).
 */
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../src/cluster.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct redis_conn *serve(const uint8_t *data, size_t size, int *peer)
{
	int sv[2];
	struct redis_conn *rc;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		abort();
	/* The socket buffer holds the input (the driver's -max_len keeps it
	 * small); a write that would block just cuts it. */
	(void)fcntl(sv[1], F_SETFL, O_NONBLOCK);
	if (size)
		(void)write(sv[1], data, size);
	shutdown(sv[1], SHUT_WR);
	/* sv[1] stays open for reading the commands sent: closed by the caller. */
	if (!(rc = redis_conn_fd(sv[0], 1000, REDIS_REPLY_MAX_LARGE)))
		abort();
	*peer = sv[1];
	return rc;
}

static void check_list(void)
{
	for (size_t i = 0; list && i < list->n; i++) {
		const struct deny_tenant *t = list->t[i];
		if (!t->n)
			abort(); /* an empty tenant is dropped */
		for (size_t j = 0; j < t->n; j++)
			if (!cluster_denied(t->name, t->users[j]))
				abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	redisReader *rd = redisReaderCreate();
	void *reply = NULL;
	size_t used;
	char err[256] = "";
	bool pong = false;
	struct redis_conn *cmd;
	int peer;
	struct deny_list *before;
	size_t before_total;

	if (!conf.name) {
		conf.name = strdup("fuzz");
		conf.timeout_ms = 1000;
		atomic_store(&active, true);
	}
	redis_reader_limit(rd);
	if (!rd || redisReaderFeed(rd, (const char *)data, size) != REDIS_OK ||
	    redisReaderGetReply(rd, &reply) != REDIS_OK || !reply) {
		if (reply)
			freeReplyObject(reply);
		redisReaderFree(rd);
		return 0;
	}
	/* What the reader took is the first reply; the rest is the answers. */
	used = size - (rd->len - rd->pos);
	cmd = serve(data + used, size - used, &peer);
	before = list;
	before_total = list ? list->total : 0;
	if (on_reply(cmd, reply, &pong, err, sizeof(err)) != 0) {
		if (!err[0])
			abort();
		if (list != before || (list ? list->total : 0) != before_total)
			abort(); /* a failed read changed the list in force */
	}
	check_list();
	freeReplyObject(reply);
	close(peer);
	redis_close(cmd);
	/* The same answers as a first load. */
	cmd = serve(data + used, size - used, &peer);
	err[0] = '\0';
	before = list;
	if (load_all(cmd, err, sizeof(err)) != 0) {
		if (!err[0] || list != before)
			abort();
	}
	check_list();
	close(peer);
	redis_close(cmd);
	redisReaderFree(rd);
	/* Keep the list from growing without bound across inputs. */
	if (list && list->total > 100000)
		list_publish(NULL);
	return 0;
}
