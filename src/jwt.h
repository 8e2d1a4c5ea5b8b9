/*
 * jwt.h — verifying a requester's JWT (JWS compact serialisation).
 *
 * Pure verification: parse, check the algorithm against the tenant's
 * allow-list and the key's type, verify the signature with OpenSSL, check the
 * time and audience claims. JSON goes through lua-cjson on the caller's Lua
 * state; on success the claims table is left on that stack. Never takes the
 * algorithm from the token alone, never accepts "none".
 */
#ifndef BROKER_JWT_H
#define BROKER_JWT_H

#include <stddef.h>
#include <time.h>

struct lua_State;
struct jwt_config;

enum jwt_alg {
	JWT_HS256 = 1u << 0,
	JWT_HS384 = 1u << 1,
	JWT_HS512 = 1u << 2,
};

/* "HS256" -> JWT_HS256; 0 for an unknown or unsupported name. */
unsigned jwt_alg_from_name(const char *name);

/*
 * Verifies token (len bytes, not NUL-terminated necessarily) under cfg at time
 * now. On success returns 0 and pushes the claims table (integral numbers as
 * Lua integers) and writes the subject (cfg->subject_claim, string or integer)
 * to subject, "" when absent. On failure returns -1, pushes nothing and writes
 * a short reason for the log to err (never the token).
 */
int jwt_verify(struct lua_State *L, const struct jwt_config *cfg, const char *token, size_t len,
	       time_t now, char *subject, size_t subjectlen, char *err, size_t errlen);

#endif
