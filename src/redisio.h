/*
 * redisio.h — the bytes to and from the cluster's Redis: plain TCP or TLS.
 *
 * One socket, non-blocking from the start, and for rediss:// its OpenSSL
 * session. The protocol stays hiredis's (redisFormatCommandArgv to encode,
 * its reader to parse: redis.h); this only moves bytes, the same way for
 * the event loops' connections (redisloop.c, driven by epoll) and the
 * synchronous ones (redis.c, driven by poll within a deadline).
 */
#ifndef BROKER_REDISIO_H
#define BROKER_REDISIO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

struct ssl_ctx_st;    /* OpenSSL's SSL_CTX */
struct ssl_st;        /* OpenSSL's SSL */
struct x509_store_st; /* OpenSSL's X509_STORE (trust.h) */

/* What a call that would block waits for (the values of POLLIN/EPOLLIN
 * and POLLOUT/EPOLLOUT). */
#define REDISIO_WANT_READ  0x001u
#define REDISIO_WANT_WRITE 0x004u

struct redisio {
	int fd;             /* -1: closed */
	struct ssl_st *ssl; /* NULL: plain TCP */
	bool connected;     /* the TCP connection is made */
	bool ready;         /* connected, and the TLS handshake (if any) done */
	unsigned want;      /* after a call that would block: what it waits for */
};

/* A TLS client context for rediss://: TLS 1.2 or later, the peer verified
 * against store (the system's anchors and cluster.redis.ca_file's: trust.h;
 * a reference is taken). NULL with a reason in err. Freed with
 * redisio_tls_free; each holder takes its own reference (redisio_tls_ref). */
struct ssl_ctx_st *redisio_tls_new(struct x509_store_st *store, char *err, size_t errlen);
struct ssl_ctx_st *redisio_tls_ref(struct ssl_ctx_st *ctx);
void redisio_tls_free(struct ssl_ctx_st *ctx);

/* Starts connecting to sa (non-blocking, TCP keepalive, no Nagle); with tls, the
 * session that will verify host (a name, checked against the certificate's
 * DNS names and sent as SNI, or an IP address, checked against its IP
 * names). 0, or -1 with err (io closed). */
int redisio_open(struct redisio *io, const struct sockaddr *sa, socklen_t salen, struct ssl_ctx_st *tls,
                 const char *host, char *err, size_t errlen);

/* Advances the connect and the TLS handshake: 0 when ready, 1 when it
 * waits (io->want), -1 when it failed (err: why, a certificate's fault
 * named). */
int redisio_handshake(struct redisio *io, char *err, size_t errlen);

/* Bytes read into buf (> 0); 0 when it would block (io->want); -1 when the
 * peer closed or it failed (err). */
ssize_t redisio_read(struct redisio *io, void *buf, size_t len, char *err, size_t errlen);

/* Whether OpenSSL holds bytes already read from the socket (which the
 * socket will not announce again): after a short read without them, the
 * caller may wait for the socket instead of reading until it would block. */
bool redisio_pending(const struct redisio *io);

/* Bytes written from buf (> 0); 0 when it would block (io->want); -1 when it
 * failed (err). Plain writes never raise SIGPIPE; OpenSSL's go through
 * write(2), so a process using TLS ignores SIGPIPE (serve and deny/allow do). */
ssize_t redisio_write(struct redisio *io, const void *buf, size_t len, char *err, size_t errlen);

/* Closes the socket and frees the session. Safe twice, and on a closed io. */
void redisio_close(struct redisio *io);

#endif
