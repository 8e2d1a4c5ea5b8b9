/*
 * ident.h — who is asking: the requester's identity, per tenant auth modes.
 *
 * Modes are tried in a fixed order: jwt, client_keys, trusted_proxy, none;
 * the first that authenticates wins. A credential that is present but
 * invalid is refused: never a fall-through to a weaker mode. Credentials are
 * only compared and verified here; they are never copied into Lua, logs or
 * responses.
 */
#ifndef BROKER_IDENT_H
#define BROKER_IDENT_H

#include <stdbool.h>
#include <stddef.h>

struct lua_State;
struct auth_config;

/* An IPv4 or IPv6 network ("10.0.0.0/8", "::1/128"). IPv4 is stored as its
 * IPv4-mapped IPv6 address with the prefix plus 96, so one comparison serves
 * both families (and a peer seen as ::ffff:10.1.2.3 matches 10.0.0.0/8). */
struct ident_cidr {
	unsigned char addr[16];
	unsigned prefix; /* 0..128 */
};

struct ident_request {
	const char *authorization; /* the Authorization header, or NULL */
	const char *peer_ip;       /* the connection's address (numeric) */
	long long now;             /* Unix seconds */
	/* The index-th value (0-based, in the order received) of the request
	 * header name, matched case-insensitively; NULL past the last. NULL
	 * callback: no other header is available. */
	const char *(*header)(void *ctx, const char *name, unsigned index);
	void *header_ctx;
};

struct identity {
	bool authenticated;
	const char *method; /* "jwt", "client_key", "proxy" or "none": static strings */
	char subject[257];  /* "" when none */
	int claims_idx;     /* absolute stack index of the claims table; 0 when none */
};

/*
 * Authenticates rq under auth. Returns 0 with id filled (for "jwt" the claims
 * table is pushed on L and id->claims_idx points at it), or -1 when the
 * requester is unauthenticated, with nothing pushed and a reason for the log
 * in err (never the credential).
 */
int ident_authenticate(struct lua_State *L, const struct auth_config *auth, const struct ident_request *rq,
                       struct identity *id, char *err, size_t errlen);

/*
 * The client address the policy sees: the peer, or, when the peer is one of
 * auth's trusted proxies, the right-most X-Forwarded-For entry that is not a
 * trusted proxy (the left-most when all are), read from the last header line
 * back. Writes a numeric address to out and returns 0, or returns -1 (out
 * holds the peer) when a trusted peer sent more X-Forwarded-For lines than
 * are read: the request must be refused, not served with a guessed address.
 */
int ident_client_ip(const struct auth_config *auth, const struct ident_request *rq, char *out, size_t outlen);

/* Whether every key source of auth is loaded (a JWKS URL fetched): /readyz. */
bool ident_ready(const struct auth_config *auth);

/* Parses "10.0.0.0/8", "::1/128", or a bare address (/32 or /128). Returns 0 or -1. */
int ident_cidr_parse(const char *s, struct ident_cidr *out);

/* Whether the numeric address ip is inside one of the n networks. */
bool ident_cidr_match(const struct ident_cidr *nets, size_t n, const char *ip);

#endif
