/*
 * listen.c — listening sockets, the admin listener, and the options every
 * MHD daemon of the front shares.
 *
 * Owns turning a configured address into a listening socket, the admin
 * listener (its own MHD thread, socket and small connection budget, so that
 * no number of client connections can starve the probes), MHD's logger and
 * its path unescaper. It must never decode a path (routing compares the path
 * as sent), and never log more than the log's rate limit lets through.
 */
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

/* The admin listener's budget: probes and scrapes, a few at a time. */
#define ADMIN_MAX_CONNECTIONS 32
#define ADMIN_TIMEOUT_S       10
#define ADMIN_MEMORY          (16 * 1024) /* MHD's memory a connection */

/* MHD's warnings ("closed by remote side with incomplete request", ...):
 * a client causes one per connection it drops, so they are rate-limited. */
void listen_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	log_warn_limited("http: %s", msg);
}

/* MHD's unescaper for the path, replaced by one that keeps it as sent:
 * routing compares the raw path, so "%2F", "%78" or "%00" can never turn
 * into a route (request_flaw refuses any escape). Query strings, which no
 * route reads, are left undecoded too. */
size_t listen_keep_escaped(void *cls, struct MHD_Connection *conn, char *s)
{
	(void)cls;
	(void)conn;
	return strlen(s);
}

void listen_addr_text(const struct sockaddr_storage *ss, char *out, size_t len)
{
	const void *a = ss->ss_family == AF_INET6
	                    ? (const void *)&((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr
	                    : (const void *)&((const struct sockaddr_in *)(const void *)ss)->sin_addr;

	if (!inet_ntop(ss->ss_family, a, out, (socklen_t)len))
		snprintf(out, len, "?");
}

/* host (an IP address, or localhost) and port as a socket address;
 * returns its length, or 0 when host is not an address. */
socklen_t listen_address(const char *host, unsigned short port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strcmp(host, "localhost") == 0)
		host = "127.0.0.1";
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		return sizeof(*sin);
	}
	if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		return sizeof(*sin6);
	}
	return 0;
}

unsigned short listen_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
		return 0;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* A listening socket (blocking: only the acceptor, or MHD's admin thread, uses it). */
int listen_socket(const char *host, unsigned short port, const struct sockaddr_storage *ss, socklen_t sl,
                  char *err, size_t errlen)
{
	int one = 1;
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
	    (ss->ss_family != AF_INET6 ||
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == 0) &&
	    bind(fd, (const struct sockaddr *)ss, sl) == 0 && listen(fd, SOMAXCONN) == 0)
		return fd;
	snprintf(err, errlen, "cannot listen on %s:%u: %s", host, port, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* The admin listener: MHD's own thread, socket and small connection budget,
 * so that no number of client connections can starve the probes. */
struct MHD_Daemon *listen_admin_start(const char *host, unsigned short port,
                                      MHD_AccessHandlerCallback handler, void *cls, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl = listen_address(host, port, &ss);
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
	struct MHD_Daemon *d;
	int fd;

	if (!sl) {
		snprintf(err, errlen, "admin_listen: %s is not an IP address (or localhost)", host);
		return NULL;
	}
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	fd = listen_socket(host, port, &ss, sl, err, errlen);
	if (fd < 0)
		return NULL;
	/* MHD owns the socket from here (and closes it when stopped). */
	d = MHD_start_daemon(flags, 0, NULL, NULL, handler, cls, MHD_OPTION_EXTERNAL_LOGGER, listen_mhd_log,
	                     NULL, MHD_OPTION_UNESCAPE_CALLBACK, listen_keep_escaped, NULL,
	                     MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_TIMEOUT,
	                     (unsigned)ADMIN_TIMEOUT_S, MHD_OPTION_CONNECTION_LIMIT,
	                     (unsigned)ADMIN_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
	                     (size_t)ADMIN_MEMORY, MHD_OPTION_END);
	if (!d) {
		close(fd);
		snprintf(err, errlen, "cannot start the admin listener");
		return NULL;
	}
	log_msg("info", "admin listener on %s:%u: /healthz /readyz /metrics", host, listen_port(fd));
	return d;
}
