/*
 * listen.h — listening sockets, the admin listener, and the options every
 * MHD daemon of the front shares (listen.c).
 */
#ifndef BROKER_LISTEN_H
#define BROKER_LISTEN_H

#include <microhttpd.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>

/* host (an IP address, or localhost) and port as a socket address;
 * returns its length, or 0 when host is not an address. */
socklen_t listen_address(const char *host, unsigned short port, struct sockaddr_storage *ss);

/* The port a socket is bound to (0 when it has none). */
unsigned short listen_port(int fd);

/* A listening socket (blocking: only the acceptor, or MHD's admin thread,
 * uses it); -1 and err on failure. */
int listen_socket(const char *host, unsigned short port, const struct sockaddr_storage *ss, socklen_t sl,
                  char *err, size_t errlen);

/* An address as text ("?" when it has none). */
void listen_addr_text(const struct sockaddr_storage *ss, char *out, size_t len);

/* MHD_OPTION_EXTERNAL_LOGGER: MHD's warnings, through the log's rate limit. */
void listen_mhd_log(void *cls, const char *fmt, va_list ap);

/* MHD_OPTION_UNESCAPE_CALLBACK: keeps the path as sent. */
size_t listen_keep_escaped(void *cls, struct MHD_Connection *conn, char *s);

/* The admin listener on host:port, serving handler (with cls) on MHD's own
 * thread; NULL and err on failure. Stopped with MHD_stop_daemon. */
struct MHD_Daemon *listen_admin_start(const char *host, unsigned short port,
                                      MHD_AccessHandlerCallback handler, void *cls, char *err, size_t errlen);

#endif
