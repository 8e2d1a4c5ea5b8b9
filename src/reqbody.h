/*
 * reqbody.h — checking a token request's body before any policy sees it.
 */
#ifndef BROKER_REQBODY_H
#define BROKER_REQBODY_H

#include <stddef.h>

struct lua_State;

/*
 * Checks the fields of a token request's body (the table at index body) that
 * the core owns, before any policy sees them: user_id present and a valid user
 * id; scopes absent (nil or null) or an array of at most DECISION_MAX_SCOPES (envelope.h)
 * valid scope tokens; expires_in absent, a duration with a unit or a positive
 * integer of seconds. Returns 0 with *user_id pointing into the body's string
 * (valid while the body is) and its length in *user_id_len, or -1 with *msg
 * set to a static text fit for the client. Leaves the stack as it was. The
 * server and `courier-broker test` both call it, so a test case cannot pass
 * with a body the server refuses.
 */
int reqbody_check(struct lua_State *L, int body, const char **user_id, size_t *user_id_len, const char **msg);

#endif
