/*
 * sdnotify.c — systemd's readiness protocol, spoken directly.
 *
 * Owns the address of $NOTIFY_SOCKET and the messages sent to it (the
 * protocol of sd_notify(3): newline-separated KEY=VALUE lines in one
 * AF_UNIX datagram). It must never block a caller (MSG_DONTWAIT), fail
 * serve because systemd is not listening, or send anything but states.
 */
#include "sdnotify.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

static struct {
	struct sockaddr_un addr;
	socklen_t len; /* 0: no NOTIFY_SOCKET, every call does nothing */
} ns;

int sdnotify_init(void)
{
	const char *e = getenv("NOTIFY_SOCKET");
	size_t n;

	ns.len = 0;
	if (!e || !*e)
		return 0;
	n = strlen(e);
	/* sun_path holds the name; an abstract one ("@name") is not NUL-terminated. */
	if ((e[0] != '/' && e[0] != '@') || n >= sizeof(ns.addr.sun_path)) {
		log_msg("warn", "NOTIFY_SOCKET is neither an absolute path nor an @abstract name of at most "
		                "107 bytes: not notifying");
		return -1;
	}
	memset(&ns.addr, 0, sizeof(ns.addr));
	ns.addr.sun_family = AF_UNIX;
	memcpy(ns.addr.sun_path, e, n);
	if (e[0] == '@')
		ns.addr.sun_path[0] = '\0';
	ns.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (e[0] == '/'));
	return 0;
}

/* One datagram; a failure is logged and otherwise ignored. */
static void send_state(const char *msg)
{
	int fd;

	if (ns.len == 0)
		return;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || sendto(fd, msg, strlen(msg), MSG_DONTWAIT | MSG_NOSIGNAL,
	                     (const struct sockaddr *)&ns.addr, ns.len) < 0)
		log_msg("warn", "cannot notify NOTIFY_SOCKET: %s", strerror(errno));
	if (fd >= 0)
		close(fd);
}

void sdnotify_ready(unsigned long long generation)
{
	char msg[96];

	snprintf(msg, sizeof(msg), "READY=1\nSTATUS=serving generation %llu", generation);
	send_state(msg);
}

void sdnotify_reloading(void)
{
	struct timespec t = clock_now();
	char msg[96];

	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
	         (unsigned long long)t.tv_sec * 1000000ULL + (unsigned long long)t.tv_nsec / 1000ULL);
	send_state(msg);
}

void sdnotify_stopping(void)
{
	send_state("STOPPING=1\nSTATUS=draining");
}
