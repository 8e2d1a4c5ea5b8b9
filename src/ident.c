/*
 * ident.c — who is asking: the requester's identity, per tenant auth modes.
 *
 * Owns the parsing of the Authorization header, the order in which a
 * tenant's modes are tried (jwt, client_keys, trusted_proxy, none), the keys
 * a tenant's JWTs are checked with (its HMAC key, public key and the JWKS
 * source's current set, held for one verification; an unknown kid asks the
 * source for a refresh), the trusted proxies' networks and the client
 * address behind them. It must
 * never let a credential that is present but invalid (or of a kind no
 * enabled mode verifies) fall through to a weaker mode, never honour a proxy
 * header from a peer outside the configured networks, and never copy a
 * credential into Lua, a log line or an error.
 */
#include "ident.h"

#include <arpa/inet.h>
#include <lua.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cidr.h"
#include "jwk.h"
#include "jwks.h"
#include "jwt.h"
#include "utf8.h"

/* X-Forwarded-For header lines a trusted proxy's request may carry. The walk
 * starts from the last line (the proxy's own), so a request with more lines
 * than this is refused rather than read in part: reading only the first N
 * would let a client that sends N lines choose the address (issue 10, M2). */
#define XFF_MAX_VALUES 16

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

/* ---- networks ------------------------------------------------------------ */

/* Whether the connection comes from one of the tenant's trusted proxies. */
static bool peer_trusted(const struct auth_config *auth, const struct ident_request *rq)
{
	return auth->proxy.enabled && auth->proxy.n_from > 0 &&
	       cidr_match(auth->proxy.from, auth->proxy.n_from, rq->peer_ip);
}

static bool in_any(const struct cidr *nets, size_t n, const unsigned char a[16])
{
	for (size_t i = 0; i < n; i++)
		if (cidr_contains(&nets[i], a))
			return true;
	return false;
}

static void copy_ip(char *out, size_t outlen, const char *ip)
{
	snprintf(out, outlen, "%s", ip ? ip : "");
}

/* Writes a canonical form of a (inet_ntop; IPv4 for mapped addresses). */
static void format_addr(const unsigned char a[16], bool v4, char *out, size_t outlen)
{
	char buf[INET6_ADDRSTRLEN];

	if (!inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? a + 12 : a, buf, sizeof(buf)))
		buf[0] = '\0';
	copy_ip(out, outlen, buf);
}

int ident_client_ip(const struct auth_config *auth, const struct ident_request *rq, char *out, size_t outlen)
{
	const char *values[XFF_MAX_VALUES];
	size_t nv = 0;

	copy_ip(out, outlen, rq->peer_ip);
	if (!peer_trusted(auth, rq) || !rq->header)
		return 0;
	while (nv < XFF_MAX_VALUES &&
	       (values[nv] = rq->header(rq->header_ctx, "X-Forwarded-For", (unsigned)nv)))
		nv++;
	if (nv == XFF_MAX_VALUES && rq->header(rq->header_ctx, "X-Forwarded-For", XFF_MAX_VALUES))
		return -1;
	/*
	 * Walk from the right: each hop appends the address it received from.
	 * Every entry a trusted proxy added is skipped; the first one that is not
	 * a trusted proxy is the client. An entry that is not an address ends the
	 * walk: nothing left of it can be trusted, so the last trusted hop is used.
	 */
	for (size_t v = nv; v-- > 0;) {
		const char *val = values[v], *end = val + strlen(val);
		while (end > val) {
			const char *start = end;
			char entry[INET6_ADDRSTRLEN + 1];
			unsigned char a[16];
			size_t len;
			bool v4;
			while (start > val && start[-1] != ',')
				start--;
			{
				const char *b = start, *e = end;
				while (b < e && (*b == ' ' || *b == '\t'))
					b++;
				while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
					e--;
				len = (size_t)(e - b);
				if (len == 0 || len >= sizeof(entry))
					return 0;
				memcpy(entry, b, len);
				entry[len] = '\0';
			}
			if (cidr_addr_parse(entry, len, a))
				return 0;
			/* Written without ':', it was IPv4 (held mapped). */
			v4 = memchr(entry, ':', len) == NULL;
			format_addr(a, v4, out, outlen);
			if (!in_any(auth->proxy.from, auth->proxy.n_from, a))
				return 0;
			end = start > val ? start - 1 : val;
		}
	}
	return 0;
}

bool ident_ready(const struct auth_config *auth)
{
	return !auth->jwt.enabled || !auth->jwt.jwks || jwks_ready(auth->jwt.jwks);
}

/* ---- JWT keys -------------------------------------------------------------- */

int ident_jwt_prepare(struct jwt_config *cfg, char *err, size_t errlen)
{
	if (cfg->hmac_secret.data && !cfg->hmac_key) {
		cfg->hmac_key = jwt_key_hmac(&cfg->hmac_secret, err, errlen);
		if (!cfg->hmac_key)
			return -1;
	}
	return 0;
}

void ident_jwt_release(struct jwt_config *cfg)
{
	jwt_key_free(cfg->hmac_key);
	cfg->hmac_key = NULL;
	jwt_key_free(cfg->public_key);
	cfg->public_key = NULL;
	jwks_close(cfg->jwks);
	cfg->jwks = NULL;
}

/* A JWKS source's keys for jwt_verify: the current set, taken on first use. */
struct jwks_lookup {
	struct jwks *src;
	struct jwks_set *set;
	bool acquired;
};

static const struct jwt_key *jwks_key(void *ctx, size_t i)
{
	struct jwks_lookup *l = ctx;

	if (!l->acquired) {
		l->set = jwks_acquire(l->src);
		l->acquired = true;
	}
	return jwks_set_key(l->set, i);
}

int ident_jwt_verify(lua_State *L, const struct jwt_config *cfg, const char *token, size_t len, time_t now,
                     char *subject, size_t subjectlen, char *err, size_t errlen)
{
	struct jwks_lookup lookup = {.src = cfg->jwks};
	struct jwt_keys keys = {.hmac = cfg->hmac_key, .fixed = cfg->public_key};
	enum jwt_status st;

	if (cfg->jwks) {
		keys.key = jwks_key;
		keys.ctx = &lookup;
	}
	st = jwt_verify(L, &cfg->rules, &keys, token, len, now, subject, subjectlen, err, errlen);
	jwks_set_release(lookup.set);
	if (st == JWT_UNKNOWN_KID)
		jwks_unknown_kid(cfg->jwks);
	return st == JWT_OK ? 0 : -1;
}

/* ---- modes, in the order they are tried ---------------------------------- */

/* A JWS compact token has exactly two dots; a client key has none (or other counts). */
static bool jwt_shaped(const struct credential *c)
{
	size_t dots = 0;

	for (size_t i = 0; i < c->token_len; i++)
		dots += c->token[i] == '.';
	return dots == 2;
}

static enum outcome try_jwt(lua_State *L, const struct auth_config *auth, const struct ident_request *rq,
                            const struct credential *c, struct identity *id, char *err, size_t errlen)
{
	char why[128];

	/* With client keys beside it, this mode claims only bearers shaped like a JWS. */
	if (!auth->jwt.enabled || !c->bearer || (auth->n_client_keys > 0 && !jwt_shaped(c)))
		return MODE_SKIP;
	if (ident_jwt_verify(L, &auth->jwt, c->token, c->token_len, (time_t)rq->now, id->subject,
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

static enum outcome try_client_key(lua_State *L, const struct auth_config *auth,
                                   const struct ident_request *rq, const struct credential *c,
                                   struct identity *id, char *err, size_t errlen)
{
	const struct client_key *found = NULL;
	unsigned char md[SECRET_DIGEST_LEN];

	(void)L;
	(void)rq;
	if (auth->n_client_keys == 0 || !c->bearer)
		return MODE_SKIP;
	/* The bearer is hashed once (a bearer longer than any key is not), then
	 * every key is compared, whatever matched before: the time taken says
	 * nothing about which key (or how much of one) the bearer resembles. */
	if (secret_candidate_digest(c->token, c->token_len, md)) {
		for (size_t i = 0; i < auth->n_client_keys; i++) {
			bool eq = secret_matches(&auth->client_keys[i].key, md);
			if (eq && !found)
				found = &auth->client_keys[i];
		}
		OPENSSL_cleanse(md, sizeof(md));
	}
	if (!found) {
		set_err(err, errlen, "client_key: no key matches");
		return MODE_FAIL;
	}
	id->authenticated = true;
	id->method = "client_key";
	snprintf(id->subject, sizeof(id->subject), "%s", found->name);
	return MODE_OK;
}

static enum outcome try_proxy(lua_State *L, const struct auth_config *auth, const struct ident_request *rq,
                              const struct credential *c, struct identity *id, char *err, size_t errlen)
{
	const char *v;
	size_t n;

	(void)L;
	/* An Authorization header that no mode before this one claimed is refused
	 * (below), even if the proxy vouches for someone: it is a credential
	 * nobody checked. From a peer that is not a trusted proxy the identity
	 * header is just a header: ignored, not an error. */
	if (c->present || !peer_trusted(auth, rq) || !rq->header || !auth->proxy.header)
		return MODE_SKIP;
	v = rq->header(rq->header_ctx, auth->proxy.header, 0);
	if (!v)
		return MODE_SKIP;
	if (rq->header(rq->header_ctx, auth->proxy.header, 1)) {
		set_err(err, errlen, "proxy: the identity header was sent more than once");
		return MODE_FAIL;
	}
	n = strlen(v);
	if (n == 0 || n > 256) {
		set_err(err, errlen, "proxy: the identity header must be 1..256 bytes");
		return MODE_FAIL;
	}
	if (!jwt_printable(v, n)) {
		set_err(err, errlen, "proxy: the identity header holds control characters");
		return MODE_FAIL;
	}
	id->authenticated = true;
	id->method = "proxy";
	memcpy(id->subject, v, n);
	id->subject[n] = '\0';
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
    {"client_key", try_client_key},
    {"proxy", try_proxy},
    {"none", try_none},
};

/* A subject reaches logs, policies and rate-limit keys as text: valid UTF-8
 * with no control character (C0, DEL, C1). jwt_printable only refuses C0 and
 * DEL, and passes raw bytes such as 0xff (issue 10, L2). */
static bool subject_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len = strlen(s), i = 0;

	while (i < len) {
		uint32_t cp;
		size_t n = utf8_decode(p + i, len - i, &cp);
		if (n == 0 || cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
			return false;
		i += n;
	}
	return true;
}

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
			if (subject_valid(id->subject))
				return 0;
			if (id->claims_idx)
				lua_settop(L, id->claims_idx - 1);
			if (err && errlen)
				snprintf(
				    err, errlen,
				    "%s: the subject is not UTF-8 text (invalid bytes or control characters)",
				    modes[i].name);
			memset(id, 0, sizeof(*id));
			id->method = "none";
			return -1;
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
