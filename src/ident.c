/*
 * ident.c — who is asking: the requester's identity, per tenant auth modes.
 *
 * Owns the parsing of the Authorization header and the order in which a
 * tenant's modes are tried. It must never let a credential that is present
 * but invalid (or of a kind no enabled mode verifies) fall through to a weaker
 * mode, and never copy a credential into Lua, a log line or an error.
 */
#include "ident.h"

#include <lua.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config.h"
#include "jwt.h"

/* The Authorization header, split once for every mode. */
struct credential {
	bool present;       /* a header was sent, well-formed or not */
	bool bearer_scheme; /* its scheme is "Bearer" */
	bool bearer;        /* ... and the token is well-formed */
	const char *token;  /* points into the header; not NUL-terminated by us */
	size_t token_len;
};

enum outcome {
	MODE_SKIP, /* not this mode's kind of credential, or mode disabled */
	MODE_OK,   /* id filled */
	MODE_FAIL, /* this mode's credential, and it is invalid: final */
};

static void set_err(char *err, size_t errlen, const char *why)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", why);
}

/*
 * RFC 6750 §2.1: "Bearer" (any case), one or more spaces, a token with no
 * whitespace or control characters. Anything else is a present credential
 * that no mode understands.
 */
static void parse_authorization(const char *h, struct credential *c)
{
	const char *t;

	memset(c, 0, sizeof(*c));
	if (!h)
		return;
	c->present = true;
	if (strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\0'))
		return;
	c->bearer_scheme = true;
	for (t = h + 6; *t == ' '; t++)
		;
	if (*t == '\0')
		return;
	for (const char *p = t; *p; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f)
			return;
	c->bearer = true;
	c->token = t;
	c->token_len = strlen(t);
}

/* ---- modes, in the order they are tried ---------------------------------- */

static enum outcome try_jwt(lua_State *L, const struct auth_config *auth, const struct ident_request *rq,
                            const struct credential *c, struct identity *id, char *err, size_t errlen)
{
	char why[128];

	/* Once client keys exist they are bearer tokens too: this mode will then
	 * claim only tokens shaped like a JWS (two dots). */
	if (!auth->jwt.enabled || !c->bearer)
		return MODE_SKIP;
	if (jwt_verify(L, &auth->jwt, c->token, c->token_len, (time_t)rq->now, id->subject,
	               sizeof(id->subject), why, sizeof(why))) {
		if (err && errlen)
			snprintf(err, errlen, "jwt: %s", why);
		return MODE_FAIL;
	}
	id->authenticated = true;
	id->method = "jwt";
	id->claims_idx = lua_gettop(L);
	return MODE_OK;
}

static enum outcome try_none(lua_State *L, const struct auth_config *auth, const struct ident_request *rq,
                             const struct credential *c, struct identity *id, char *err, size_t errlen)
{
	(void)L;
	(void)rq;
	(void)err;
	(void)errlen;
	/* Only a request that carries no credential at all is anonymous. */
	if (!auth->none || c->present)
		return MODE_SKIP;
	id->authenticated = false;
	id->method = "none";
	return MODE_OK;
}

static const struct mode {
	const char *name;
	enum outcome (*try)(lua_State *L, const struct auth_config *auth, const struct ident_request *rq,
	                    const struct credential *c, struct identity *id, char *err, size_t errlen);
} modes[] = {
    {"jwt", try_jwt},
    {"none", try_none},
};

int ident_authenticate(lua_State *L, const struct auth_config *auth, const struct ident_request *rq,
                       struct identity *id, char *err, size_t errlen)
{
	struct credential c;

	memset(id, 0, sizeof(*id));
	id->method = "none";
	parse_authorization(rq->authorization, &c);
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		switch (modes[i].try(L, auth, rq, &c, id, err, errlen)) {
		case MODE_SKIP:
			continue;
		case MODE_OK:
			return 0;
		case MODE_FAIL:
			memset(id, 0, sizeof(*id));
			id->method = "none";
			return -1;
		}
	}
	/* Fail closed: a credential nobody could verify is not "no credential". */
	set_err(err, errlen,
	        !c.present         ? "no credential"
	        : !c.bearer_scheme ? "unsupported authorization scheme"
	        : !c.bearer        ? "malformed bearer credential"
	                           : "bearer credential not accepted by this tenant");
	return -1;
}
