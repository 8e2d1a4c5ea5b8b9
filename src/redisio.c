/*
 * redisio.c — the bytes to and from the cluster's Redis: plain TCP or TLS.
 *
 * Owns the socket of one connection to Redis and, for rediss://, its
 * OpenSSL session: a non-blocking connect, the TLS handshake (1.2 or later,
 * the certificate verified against the trust store the configuration built,
 * the host name or IP address checked), reads and writes that never block,
 * and the TLS client context those sessions come from. It must never turn
 * verification off (there is no switch), never block, never log, and never
 * hide bytes inside OpenSSL from a caller that waits on the socket (a read
 * reports "would block" only when OpenSSL itself wants the socket, and
 * redisio_pending says when it holds more).
 */
#include "redisio.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct ssl_ctx_st *redisio_tls_new(struct x509_store_st *store, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx || !store || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		snprintf(err, errlen, "cannot set up TLS");
		SSL_CTX_free(ctx);
		ERR_clear_error();
		return NULL;
	}
	SSL_CTX_set1_cert_store(ctx, store);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	/* A write retried after "would block" may come from a moved buffer. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return ctx;
}

struct ssl_ctx_st *redisio_tls_ref(struct ssl_ctx_st *ctx)
{
	if (ctx)
		SSL_CTX_up_ref(ctx);
	return ctx;
}

void redisio_tls_free(struct ssl_ctx_st *ctx)
{
	SSL_CTX_free(ctx);
}

/* The session's peer check: an IP address against the IP names, a name
 * against the DNS names (no partial wildcards) and sent as SNI. */
static int tls_session(struct redisio *io, SSL_CTX *ctx, const char *host)
{
	unsigned char addr[sizeof(struct in6_addr)];
	bool ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;

	if (!(io->ssl = SSL_new(ctx)) || SSL_set_fd(io->ssl, io->fd) != 1)
		return -1;
	if (ip)
		return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(io->ssl), host) == 1 ? 0 : -1;
	SSL_set_hostflags(io->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (SSL_set1_host(io->ssl, host) != 1 || SSL_set_tlsext_host_name(io->ssl, host) != 1)
		return -1;
	return 0;
}

int redisio_open(struct redisio *io, const struct sockaddr *sa, socklen_t salen, struct ssl_ctx_st *tls,
                 const char *host, char *err, size_t errlen)
{
	int one = 1;

	memset(io, 0, sizeof(*io));
	io->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (io->fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(io->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	/* Commands are small and waited for: never held back for an ACK (as
	 * hiredis does). */
	setsockopt(io->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (tls && tls_session(io, tls, host) != 0) {
		snprintf(err, errlen, "cannot set up a TLS session for %s", host);
		ERR_clear_error();
		redisio_close(io);
		return -1;
	}
	if (connect(io->fd, sa, salen) == 0) {
		io->connected = true;
	} else if (errno != EINPROGRESS) {
		snprintf(err, errlen, "connect: %s", strerror(errno));
		redisio_close(io);
		return -1;
	}
	io->ready = io->connected && !io->ssl;
	io->want = REDISIO_WANT_WRITE;
	return 0;
}

/* Why a TLS call failed: the certificate's fault when verification failed,
 * else OpenSSL's last error (neither holds a secret). */
static void tls_error(struct redisio *io, int rc, const char *what, char *err, size_t errlen)
{
	int e = SSL_get_error(io->ssl, rc);
	long v = SSL_get_verify_result(io->ssl);
	unsigned long last = ERR_peek_last_error();

	if (e == SSL_ERROR_SSL && v != X509_V_OK)
		snprintf(err, errlen, "TLS: the server's certificate is refused: %s",
		         X509_verify_cert_error_string(v));
	else if (last)
		snprintf(err, errlen, "TLS %s: %s", what, ERR_reason_error_string(last));
	else if (e == SSL_ERROR_SYSCALL && errno)
		snprintf(err, errlen, "TLS %s: %s", what, strerror(errno));
	else
		snprintf(err, errlen, "TLS %s: connection closed", what);
	ERR_clear_error();
}

/* What a TLS call's failure means: 1 when it must wait for the socket (which
 * way is kept in io->want), -1 when the connection is done (err says why). */
static int tls_outcome(struct redisio *io, int rc, const char *what, char *err, size_t errlen)
{
	switch (SSL_get_error(io->ssl, rc)) {
	case SSL_ERROR_WANT_READ:
		io->want = REDISIO_WANT_READ;
		return 1;
	case SSL_ERROR_WANT_WRITE:
		io->want = REDISIO_WANT_WRITE;
		return 1;
	case SSL_ERROR_ZERO_RETURN:
		snprintf(err, errlen, "connection closed");
		return -1;
	default:
		tls_error(io, rc, what, err, errlen);
		return -1;
	}
}

int redisio_handshake(struct redisio *io, char *err, size_t errlen)
{
	int rc;

	if (io->fd < 0) {
		snprintf(err, errlen, "not connected");
		return -1;
	}
	if (io->ready)
		return 0;
	if (!io->connected) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);
		int soerr = 0;
		socklen_t elen = sizeof(soerr);
		if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &soerr, &elen) == 0 && soerr) {
			snprintf(err, errlen, "connect: %s", strerror(soerr));
			return -1;
		}
		/* Connected once the socket has a peer. */
		if (getpeername(io->fd, (struct sockaddr *)&peer, &len) != 0) {
			if (errno != ENOTCONN) {
				snprintf(err, errlen, "connect: %s", strerror(errno));
				return -1;
			}
			io->want = REDISIO_WANT_WRITE;
			return 1;
		}
		io->connected = true;
	}
	if (!io->ssl) {
		io->ready = true;
		return 0;
	}
	ERR_clear_error();
	rc = SSL_connect(io->ssl);
	if (rc == 1) {
		io->ready = true;
		return 0;
	}
	return tls_outcome(io, rc, "handshake", err, errlen);
}

ssize_t redisio_read(struct redisio *io, void *buf, size_t len, char *err, size_t errlen)
{
	ssize_t n;
	int rc;

	if (!io->ssl) {
		do
			n = read(io->fd, buf, len);
		while (n < 0 && errno == EINTR);
		if (n > 0)
			return n;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			io->want = REDISIO_WANT_READ;
			return 0;
		}
		snprintf(err, errlen, "%s", n == 0 ? "connection closed" : strerror(errno));
		return -1;
	}
	ERR_clear_error();
	rc = SSL_read(io->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
	if (rc > 0)
		return rc;
	return tls_outcome(io, rc, "read", err, errlen) > 0 ? 0 : -1;
}

bool redisio_pending(const struct redisio *io)
{
	return io->ssl && SSL_has_pending(io->ssl);
}

ssize_t redisio_write(struct redisio *io, const void *buf, size_t len, char *err, size_t errlen)
{
	ssize_t n;
	int rc;

	if (!io->ssl) {
		do
			n = send(io->fd, buf, len, MSG_NOSIGNAL);
		while (n < 0 && errno == EINTR);
		if (n > 0)
			return n;
		if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
			io->want = REDISIO_WANT_WRITE;
			return 0;
		}
		snprintf(err, errlen, "%s", strerror(errno));
		return -1;
	}
	ERR_clear_error();
	rc = SSL_write(io->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
	if (rc > 0)
		return rc;
	return tls_outcome(io, rc, "write", err, errlen) > 0 ? 0 : -1;
}

void redisio_close(struct redisio *io)
{
	if (io->ssl)
		SSL_free(io->ssl);
	if (io->fd >= 0)
		close(io->fd);
	io->ssl = NULL;
	io->fd = -1;
	io->connected = io->ready = false;
	io->want = 0;
}
