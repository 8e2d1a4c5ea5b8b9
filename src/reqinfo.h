/*
 * reqinfo.h — reading what a request says about itself: its headers, its
 * media type and the address it came from (libmicrohttpd's connection).
 */
#ifndef BROKER_REQINFO_H
#define BROKER_REQINFO_H

#include <stdbool.h>
#include <stddef.h>

struct MHD_Connection;
struct policy_header;

/* The first value of the header name (any case), or NULL. */
const char *reqinfo_header(struct MHD_Connection *conn, const char *name);

/* Whether a Content-Type value is application/json (any case), alone or
 * followed by parameters. */
bool reqinfo_is_json(const char *content_type);

/* The peer's IP address as text in out (empty when unknown). */
void reqinfo_peer_ip(struct MHD_Connection *conn, char *out, size_t len);

/* ident's header lookup (struct ident_request.header; ctx is the
 * connection): the index-th value of header name, in the order received,
 * or NULL. */
const char *reqinfo_nth_header(void *ctx, const char *name, unsigned index);

/*
 * The headers a policy may read: every header but Authorization, Cookie and
 * Proxy-Authorization, in the order received, names lowercased into buf
 * (values point into the connection). Fills at most max entries of h and
 * returns how many; stops at the first that does not fit.
 */
size_t reqinfo_headers(struct MHD_Connection *conn, struct policy_header *h, size_t max, char *buf,
                       size_t buflen);

#endif
