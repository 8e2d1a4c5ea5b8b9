/*
 * reqinfo.c — what a request says about itself, read from its connection.
 *
 * Owns reading a request's headers (one by name, the index-th of a name, the
 * set a policy may read), its media type and its peer's address, for the
 * token pipeline (token.c) and identity (ident.c, through the callback). It
 * must never hand on a credential header (Authorization, Cookie,
 * Proxy-Authorization) in the set a policy reads, never write past the
 * caller's buffers, and never keep anything of a request: every value
 * points into the connection, valid while the request is.
 */
#include "reqinfo.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "policy.h"

const char *reqinfo_header(struct MHD_Connection *conn, const char *name)
{
	return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

bool reqinfo_is_json(const char *ct)
{
	static const char want[] = "application/json";

	if (!ct || strncasecmp(ct, want, sizeof(want) - 1) != 0)
		return false;
	ct += sizeof(want) - 1;
	return *ct == '\0' || *ct == ';' || *ct == ' ' || *ct == '\t';
}

void reqinfo_peer_ip(struct MHD_Connection *conn, char *out, size_t len)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;

	out[0] = '\0';
	if (!sa)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
		          (socklen_t)len);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
		          (socklen_t)len);
}

/* The set reqinfo_headers fills: the caller's arrays, and how full. */
struct header_set {
	struct policy_header *h;
	size_t max, n;
	char *buf;
	size_t cap, used;
};

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct header_set *hs = cls;
	size_t klen = strlen(key);

	(void)kind;
	if (!value || strcasecmp(key, "authorization") == 0 || strcasecmp(key, "cookie") == 0 ||
	    strcasecmp(key, "proxy-authorization") == 0)
		return MHD_YES;
	if (hs->n >= hs->max || hs->used + klen + 1 > hs->cap)
		return MHD_NO;
	for (size_t i = 0; i < klen; i++) {
		char c = key[i];
		hs->buf[hs->used + i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	hs->buf[hs->used + klen] = '\0';
	hs->h[hs->n].name = hs->buf + hs->used;
	hs->h[hs->n].value = value;
	hs->n++;
	hs->used += klen + 1;
	return MHD_YES;
}

size_t reqinfo_headers(struct MHD_Connection *conn, struct policy_header *h, size_t max, char *buf,
                       size_t buflen)
{
	struct header_set hs = {.h = h, .max = max, .buf = buf, .cap = buflen};

	MHD_get_connection_values(conn, MHD_HEADER_KIND, collect_header, &hs);
	return hs.n;
}

/* ident's header lookup: the index-th value of a header, in the order received. */
struct nth_header {
	const char *name;
	unsigned want, seen;
	const char *found;
};

static enum MHD_Result nth_header_cb(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct nth_header *q = cls;

	(void)kind;
	if (strcasecmp(key, q->name) != 0)
		return MHD_YES;
	if (q->seen++ < q->want)
		return MHD_YES;
	q->found = value;
	return MHD_NO;
}

const char *reqinfo_nth_header(void *ctx, const char *name, unsigned index)
{
	struct nth_header q = {.name = name, .want = index};

	MHD_get_connection_values(ctx, MHD_HEADER_KIND, nth_header_cb, &q);
	return q.found;
}
