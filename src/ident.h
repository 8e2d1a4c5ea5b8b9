/*
 * ident.h — who is asking: the requester's identity, per tenant auth modes.
 *
 * Modes are tried in a fixed order (jwt, then none). A credential that is
 * present but invalid is refused: never a fall-through to a weaker mode.
 * Credentials are only compared and verified here; they are never copied
 * into Lua, logs or responses.
 */
#ifndef BROKER_IDENT_H
#define BROKER_IDENT_H

#include <stdbool.h>
#include <stddef.h>

struct lua_State;
struct auth_config;

struct ident_request {
	const char *authorization; /* the Authorization header, or NULL */
	const char *peer_ip;       /* the connection's address */
	long long now;             /* Unix seconds */
};

struct identity {
	bool authenticated;
	const char *method; /* "jwt" or "none": static strings */
	char subject[256];  /* "" when none */
	int claims_idx;     /* absolute stack index of the claims table; 0 when none */
};

/*
 * Authenticates rq under auth. Returns 0 with id filled (for "jwt" the claims
 * table is pushed on L and id->claims_idx points at it), or -1 when the
 * requester is unauthenticated, with nothing pushed and a reason for the log
 * in err (never the credential).
 */
int ident_authenticate(struct lua_State *L, const struct auth_config *auth,
		       const struct ident_request *rq, struct identity *id, char *err, size_t errlen);

#endif
