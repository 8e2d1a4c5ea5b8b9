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
#include <time.h>

#include "jwks.h"
#include "jwt.h"
#include "secret.h"

struct lua_State;
struct cidr;

/* A tenant's `auth.jwt`: the claim rules and the key material. */
struct jwt_config {
	bool enabled;
	struct jwt_rules rules;        /* what jwt_verify checks besides the signature */
	struct secret hmac_secret;     /* for HS* */
	struct jwt_key *hmac_key;      /* built from hmac_secret by ident_jwt_prepare */
	bool public_key_given;         /* public_key = { ... } was given */
	struct jwt_key *public_key;    /* public_key = { file = PEM } */
	struct jwks_options jwks_opts; /* jwks = { file | url, ... } as configured */
	struct jwks *jwks;             /* the source opened from jwks_opts */
};

struct client_key {
	char *name; /* req.identity.subject */
	struct secret key;
};

struct trusted_proxy_config {
	bool enabled;
	char *header;      /* e.g. "X-Forwarded-User" */
	struct cidr *from; /* peers whose header is honoured; never empty */
	size_t n_from;
};

struct auth_config {
	struct jwt_config jwt;
	struct client_key *client_keys; /* server-to-server bearer keys */
	size_t n_client_keys;
	struct trusted_proxy_config proxy;
	bool none; /* development: unauthenticated requester reaches the policy */
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

/*
 * Builds cfg's HMAC key from cfg->hmac_secret (when set); the loader calls it
 * once at load, tests after filling a struct by hand. Returns 0 or -1.
 */
int ident_jwt_prepare(struct jwt_config *cfg, char *err, size_t errlen);

/* Frees the keys ident_jwt_prepare and the loader attached (hmac_key,
 * public_key, jwks); leaves the rest of cfg alone. */
void ident_jwt_release(struct jwt_config *cfg);

/*
 * jwt_verify under cfg's rules with cfg's keys: the HMAC key, the public key
 * and the JWKS source's current set (a reference held for the call). A kid
 * the set lacks asks the source for a refresh. Returns 0, with the claims
 * pushed and the subject written, or -1 with the reason in err.
 */
int ident_jwt_verify(struct lua_State *L, const struct jwt_config *cfg, const char *token, size_t len,
                     time_t now, char *subject, size_t subjectlen, char *err, size_t errlen);

#endif
