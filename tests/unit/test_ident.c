/*
 * test_ident.c — tests for src/ident.c.
 *
 * The requester's identity per tenant auth modes: Bearer parsing, the jwt
 * mode, the none mode, and that a credential which is present but cannot be
 * verified never falls through to "none".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <lauxlib.h>
#include <lua.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cidr.h"
#include "ident.h"
#include "json.h"
#include "jwt.h"
#include "secret.h"

#define NOW 1700000100LL

/* PyJWT 2.6.0: jwt.encode({"sub":"alice","iss":"https://app.example.com",
 * "aud":"courier-broker","iat":1700000000,"exp":1700003600}, "secret", "HS256") */
static const char PY_HS256[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vYXBwLmV4YW1wbGUuY29tIiwiYXVkIjoiY291cmllci1icm9rZXIiLCJpYXQi"
    "OjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMH0.z2cpplD9QN7jdA0tdSvLiFTtfzcJfgObH7emOuUta0s";

struct fx {
	lua_State *L;
	struct auth_config auth;
	struct identity id;
	char err[160];
	char hdr[1024];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	f->L = luaL_newstate();
	if (!f->L || json_open(f->L))
		return -1;
	f->auth.jwt.enabled = true;
	f->auth.jwt.rules.algorithms = JWT_HS256;
	if (secret_set(&f->auth.jwt.hmac_secret, "secret", 6))
		return -1;
	f->auth.jwt.rules.issuer = "https://app.example.com";
	f->auth.jwt.rules.audience = "courier-broker";
	f->auth.jwt.rules.leeway_s = 30;
	f->auth.jwt.rules.max_token_bytes = 8192;
	f->auth.jwt.rules.subject_claim = "sub";
	if (ident_jwt_prepare(&f->auth.jwt, NULL, 0))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	secret_clear(&f->auth.jwt.hmac_secret);
	ident_jwt_release(&f->auth.jwt);
	lua_close(f->L);
	free(f);
	return 0;
}

/* Runs ident_authenticate with that header; checks the stack discipline. */
static int auth(struct fx *f, const char *authorization)
{
	struct ident_request rq = {.authorization = authorization, .peer_ip = "127.0.0.1", .now = NOW};
	int top = lua_gettop(f->L), rc;

	f->err[0] = '\0';
	rc = ident_authenticate(f->L, &f->auth, &rq, &f->id, f->err, sizeof(f->err));
	if (rc == 0 && f->id.claims_idx) {
		assert_int_equal(lua_gettop(f->L), top + 1);
		assert_int_equal(f->id.claims_idx, top + 1);
		assert_int_equal(lua_type(f->L, f->id.claims_idx), LUA_TTABLE);
	} else {
		assert_int_equal(lua_gettop(f->L), top);
		assert_int_equal(f->id.claims_idx, 0);
	}
	if (rc) {
		assert_int_equal(rc, -1);
		assert_false(f->id.authenticated);
		assert_string_equal(f->id.subject, "");
		assert_true(f->err[0] != '\0');
		/* The reason never quotes the credential. */
		assert_null(strstr(f->err, "eyJ"));
		assert_null(strstr(f->err, "dXNlcjpwYXNz"));
	}
	return rc;
}

static void expect_jwt(struct fx *f, const char *authorization)
{
	if (auth(f, authorization))
		fail_msg("refused: %s", f->err);
	assert_true(f->id.authenticated);
	assert_string_equal(f->id.method, "jwt");
	assert_string_equal(f->id.subject, "alice");
	lua_getfield(f->L, f->id.claims_idx, "iss");
	assert_string_equal(lua_tostring(f->L, -1), "https://app.example.com");
	lua_settop(f->L, 0);
}

static void expect_refused(struct fx *f, const char *authorization, const char *why)
{
	assert_int_equal(auth(f, authorization), -1);
	if (why && !strstr(f->err, why))
		fail_msg("reason \"%s\", expected \"%s\"", f->err, why);
}

/* ---- Bearer parsing ------------------------------------------------------ */

static void t_bearer_ok(void **state)
{
	struct fx *f = *state;

	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	expect_jwt(f, f->hdr);
	snprintf(f->hdr, sizeof(f->hdr), "bearer %s", PY_HS256);
	expect_jwt(f, f->hdr);
	snprintf(f->hdr, sizeof(f->hdr), "BEARER   %s", PY_HS256);
	expect_jwt(f, f->hdr);
}

static void t_claims_idx_is_absolute(void **state)
{
	struct fx *f = *state;

	lua_pushinteger(f->L, 1);
	lua_pushinteger(f->L, 2);
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	assert_int_equal(auth(f, f->hdr), 0);
	assert_int_equal(f->id.claims_idx, 3);
	lua_pushinteger(f->L, 4); /* still points at the claims after more pushes */
	assert_int_equal(lua_type(f->L, f->id.claims_idx), LUA_TTABLE);
	lua_settop(f->L, 0);
}

static void t_bearer_malformed(void **state)
{
	struct fx *f = *state;

	expect_refused(f, "Basic dXNlcjpwYXNz", "unsupported authorization scheme");
	expect_refused(f, "Bearer", "malformed");
	expect_refused(f, "Bearer ", "malformed");
	expect_refused(f, "Bearer    ", "malformed");
	expect_refused(f, "", "unsupported");
	snprintf(f->hdr, sizeof(f->hdr), "Bearer\t%s", PY_HS256);
	expect_refused(f, f->hdr, NULL);
	snprintf(f->hdr, sizeof(f->hdr), "Bearer%s", PY_HS256);
	expect_refused(f, f->hdr, "unsupported");
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s x", PY_HS256);
	expect_refused(f, f->hdr, "malformed");
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s ", PY_HS256);
	expect_refused(f, f->hdr, "malformed");
	snprintf(f->hdr, sizeof(f->hdr), " Bearer %s", PY_HS256);
	expect_refused(f, f->hdr, "unsupported");
	snprintf(f->hdr, sizeof(f->hdr), "Bearerx %s", PY_HS256);
	expect_refused(f, f->hdr, "unsupported");
	snprintf(f->hdr, sizeof(f->hdr), "Token %s", PY_HS256);
	expect_refused(f, f->hdr, "unsupported");
}

static void t_bad_jwt(void **state)
{
	struct fx *f = *state;

	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	f->hdr[strlen(f->hdr) - 2] ^= 1;
	expect_refused(f, f->hdr, "jwt: bad signature");
	expect_refused(f, "Bearer not-a-jwt", "jwt:");
	f->auth.jwt.rules.audience = "someone-else";
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	expect_refused(f, f->hdr, "jwt: audience");
}

/* ---- modes --------------------------------------------------------------- */

static void t_no_credential(void **state)
{
	struct fx *f = *state;

	expect_refused(f, NULL, "no credential");
}

static void t_none_mode(void **state)
{
	struct fx *f = *state;

	f->auth.none = true;
	assert_int_equal(auth(f, NULL), 0);
	assert_false(f->id.authenticated);
	assert_string_equal(f->id.method, "none");
	assert_string_equal(f->id.subject, "");
	assert_int_equal(f->id.claims_idx, 0);
	/* jwt and none together: a good token still authenticates. */
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	expect_jwt(f, f->hdr);
}

static void t_present_invalid_with_none_enabled(void **state)
{
	struct fx *f = *state;

	f->auth.none = true;
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	f->hdr[strlen(f->hdr) - 2] ^= 1;
	expect_refused(f, f->hdr, "bad signature");
	expect_refused(f, "Bearer garbage", "jwt:");
	expect_refused(f, "Basic dXNlcjpwYXNz", "unsupported");
	expect_refused(f, "Bearer", "malformed");
	expect_refused(f, "", NULL);
}

static void t_none_only_refuses_any_credential(void **state)
{
	struct fx *f = *state;

	f->auth.jwt.enabled = false;
	f->auth.none = true;
	assert_int_equal(auth(f, NULL), 0);
	assert_string_equal(f->id.method, "none");
	/* A valid JWT, but this tenant cannot verify JWTs: fail closed. */
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	expect_refused(f, f->hdr, "not accepted");
	expect_refused(f, "Basic dXNlcjpwYXNz", "unsupported");
}

static void t_nothing_enabled(void **state)
{
	struct fx *f = *state;

	f->auth.jwt.enabled = false;
	f->auth.none = false;
	expect_refused(f, NULL, "no credential");
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	expect_refused(f, f->hdr, "not accepted");
}

/* ---- a request with headers ------------------------------------------------ */

/* Headers as "Name: value" strings; lookup is case-insensitive, in order. */
struct hdrs {
	const char *const *lines;
};

static const char *hdr_lookup(void *ctx, const char *name, unsigned index)
{
	const struct hdrs *h = ctx;
	size_t nl = strlen(name);
	unsigned seen = 0;

	for (size_t i = 0; h->lines[i]; i++)
		if (strncasecmp(h->lines[i], name, nl) == 0 && h->lines[i][nl] == ':' && seen++ == index)
			return h->lines[i] + nl + 2;
	return NULL;
}

static int auth_from(struct fx *f, const char *authorization, const char *peer, const char *const *lines)
{
	struct hdrs h = {lines};
	struct ident_request rq = {.authorization = authorization,
	                           .peer_ip = peer,
	                           .now = NOW,
	                           .header = hdr_lookup,
	                           .header_ctx = &h};
	int top = lua_gettop(f->L), rc;

	f->err[0] = '\0';
	rc = ident_authenticate(f->L, &f->auth, &rq, &f->id, f->err, sizeof(f->err));
	assert_int_equal(lua_gettop(f->L), top + (rc == 0 && f->id.claims_idx ? 1 : 0));
	lua_settop(f->L, top);
	if (rc) {
		assert_false(f->id.authenticated);
		assert_string_equal(f->id.subject, "");
		assert_null(strstr(f->err, "billing-secret"));
	}
	return rc;
}

static const char *client_ip(struct fx *f, const char *peer, const char *const *lines)
{
	static char out[64];
	struct hdrs h = {lines};
	struct ident_request rq = {.peer_ip = peer, .now = NOW, .header = hdr_lookup, .header_ctx = &h};

	if (ident_client_ip(&f->auth, &rq, out, sizeof(out)) != 0)
		return "refused";
	return out;
}

static void add_client_keys(struct fx *f)
{
	f->auth.client_keys = calloc(2, sizeof(*f->auth.client_keys));
	assert_non_null(f->auth.client_keys);
	f->auth.client_keys[0].name = "billing-backend";
	assert_int_equal(secret_set(&f->auth.client_keys[0].key, "billing-secret-0123456789", 25), 0);
	f->auth.client_keys[1].name = "reports";
	assert_int_equal(secret_set(&f->auth.client_keys[1].key, "reports-secret-0123456789", 25), 0);
	f->auth.n_client_keys = 2;
}

static void drop_client_keys(struct fx *f)
{
	for (size_t i = 0; i < f->auth.n_client_keys; i++)
		secret_clear(&f->auth.client_keys[i].key);
	free(f->auth.client_keys);
	f->auth.client_keys = NULL;
	f->auth.n_client_keys = 0;
}

/* One trusted_proxy.from entry, read as the configuration reads it. */
static int parse_net(const char *s, struct cidr *out)
{
	return cidr_parse(s, strlen(s), out);
}

static void set_proxy(struct fx *f, const char *const *cidrs)
{
	size_t n = 0;

	while (cidrs[n])
		n++;
	free(f->auth.proxy.from);
	f->auth.proxy.from = calloc(n, sizeof(*f->auth.proxy.from));
	for (size_t i = 0; i < n; i++)
		assert_int_equal(parse_net(cidrs[i], &f->auth.proxy.from[i]), 0);
	f->auth.proxy.n_from = n;
	f->auth.proxy.enabled = true;
	f->auth.proxy.header = "X-Forwarded-User";
}

/* ---- client keys ------------------------------------------------------------- */

static void t_client_keys(void **state)
{
	struct fx *f = *state;
	static const char *const none[] = {NULL};

	add_client_keys(f);
	assert_int_equal(auth_from(f, "Bearer billing-secret-0123456789", "10.1.1.1", none), 0);
	assert_true(f->id.authenticated);
	assert_string_equal(f->id.method, "client_key");
	assert_string_equal(f->id.subject, "billing-backend");
	assert_int_equal(f->id.claims_idx, 0);
	assert_int_equal(auth_from(f, "Bearer reports-secret-0123456789", "10.1.1.1", none), 0);
	assert_string_equal(f->id.subject, "reports");
	/* Near misses: prefix, longer, other case. */
	assert_int_equal(auth_from(f, "Bearer billing-secret-012345678", "10.1.1.1", none), -1);
	assert_non_null(strstr(f->err, "client_key"));
	assert_int_equal(auth_from(f, "Bearer billing-secret-01234567890", "10.1.1.1", none), -1);
	assert_int_equal(auth_from(f, "Bearer BILLING-secret-0123456789", "10.1.1.1", none), -1);
	/* With jwt beside it: a bearer with two dots goes to jwt, any other to client_keys. */
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	assert_int_equal(auth_from(f, f->hdr, "10.1.1.1", none), 0);
	assert_string_equal(f->id.method, "jwt");
	assert_int_equal(auth_from(f, "Bearer a.b.c", "10.1.1.1", none), -1);
	assert_non_null(strstr(f->err, "jwt:"));
	assert_int_equal(auth_from(f, "Bearer a.b", "10.1.1.1", none), -1);
	assert_non_null(strstr(f->err, "client_key"));
	/* Without jwt every bearer goes to client_keys, JWT-shaped or not. */
	f->auth.jwt.enabled = false;
	assert_int_equal(auth_from(f, f->hdr, "10.1.1.1", none), -1);
	assert_non_null(strstr(f->err, "client_key"));
	/* A wrong key never falls through to none. */
	f->auth.none = true;
	assert_int_equal(auth_from(f, "Bearer nope", "10.1.1.1", none), -1);
	assert_int_equal(auth_from(f, NULL, "10.1.1.1", none), 0);
	assert_string_equal(f->id.method, "none");
	drop_client_keys(f);
}

/* A bearer that is neither a valid JWT nor a client key is 401 even with none = true. */
static void t_bearer_neither(void **state)
{
	struct fx *f = *state;
	static const char *const none[] = {NULL};

	add_client_keys(f);
	f->auth.none = true;
	assert_int_equal(auth_from(f, "Bearer x.y.z", "127.0.0.1", none), -1);
	assert_int_equal(auth_from(f, "Bearer xyz", "127.0.0.1", none), -1);
	assert_int_equal(auth_from(f, "Basic dXNlcjpwYXNz", "127.0.0.1", none), -1);
	drop_client_keys(f);
}

/* ---- trusted proxy --------------------------------------------------------------- */

static void t_cidr_parse_and_match(void **state)
{
	struct cidr c[4];
	static const char *const bad[] = {"",
	                                  "10.0.0.0/33",
	                                  "10.0.0.0/-1",
	                                  "10.0.0.0/",
	                                  "/8",
	                                  "10.0.0/8",
	                                  "10.0.0.1/8",
	                                  "::1/129",
	                                  "fe80::1%lo/128",
	                                  "1.2.3.4/08",
	                                  "::/",
	                                  "10.0.0.0/8/8",
	                                  "10.0.0.0 /8",
	                                  "banana",
	                                  "1.2.3.4/32x",
	                                  "::ffff:1.2.3.4/200"};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (parse_net(bad[i], &c[0]) == 0)
			fail_msg("accepted \"%s\"", bad[i]);
	assert_int_equal(parse_net("10.0.0.0/8", &c[0]), 0);
	assert_true(cidr_match(c, 1, "10.0.0.0"));
	assert_true(cidr_match(c, 1, "10.255.255.255"));
	assert_true(cidr_match(c, 1, "::ffff:10.1.2.3")); /* a mapped peer on a v6 socket */
	assert_false(cidr_match(c, 1, "11.0.0.0"));
	assert_false(cidr_match(c, 1, "9.255.255.255"));
	assert_false(cidr_match(c, 1, "::a00:1"));
	assert_false(cidr_match(c, 1, "garbage"));
	assert_false(cidr_match(c, 1, NULL));
	assert_int_equal(parse_net("127.0.0.1/32", &c[0]), 0);
	assert_true(cidr_match(c, 1, "127.0.0.1"));
	assert_false(cidr_match(c, 1, "127.0.0.2"));
	assert_int_equal(parse_net("127.0.0.1", &c[0]), 0); /* a bare address is /32 */
	assert_false(cidr_match(c, 1, "127.0.0.2"));
	assert_int_equal(parse_net("0.0.0.0/0", &c[0]), 0);
	assert_true(cidr_match(c, 1, "203.0.113.9"));
	assert_false(cidr_match(c, 1, "2001:db8::1")); /* v4 /0 is all of IPv4, not IPv6 */
	assert_int_equal(parse_net("::/0", &c[0]), 0);
	assert_true(cidr_match(c, 1, "2001:db8::1"));
	assert_true(cidr_match(c, 1, "203.0.113.9"));
	assert_int_equal(parse_net("::1/128", &c[0]), 0);
	assert_true(cidr_match(c, 1, "::1"));
	assert_false(cidr_match(c, 1, "::2"));
	assert_int_equal(parse_net("2001:db8:abcc::/47", &c[0]), 0);
	assert_int_equal(parse_net("2001:db8:abcd::/47", &c[0]), -1); /* host bit */
	assert_int_equal(parse_net("2001:db8:abcc::/47", &c[0]), 0);
	assert_true(cidr_match(c, 1, "2001:db8:abcd:1::5"));
	assert_false(cidr_match(c, 1, "2001:db8:abce::1"));
	assert_int_equal(parse_net("192.168.4.0/22", &c[1]), 0);
	assert_true(cidr_match(c, 2, "192.168.7.255"));
	assert_false(cidr_match(c, 2, "192.168.8.0"));
}

static void t_trusted_proxy(void **state)
{
	struct fx *f = *state;
	static const char *const nets[] = {"10.0.0.0/8", "127.0.0.1/32", "::1/128", NULL};
	static const char *const user[] = {"X-Forwarded-User: alice@example.com", NULL};
	static const char *const lower[] = {"x-forwarded-user: bob", NULL};
	static const char *const twice[] = {"X-Forwarded-User: a", "X-Forwarded-User: b", NULL};
	static const char *const empty[] = {"X-Forwarded-User: ", NULL};
	static const char *const ctrl[] = {"X-Forwarded-User: a\tb", NULL};
	static const char *const none[] = {NULL};
	char longv[400];
	const char *longh[] = {longv, NULL};

	f->auth.jwt.enabled = false;
	set_proxy(f, nets);
	assert_int_equal(auth_from(f, NULL, "10.2.3.4", user), 0);
	assert_string_equal(f->id.method, "proxy");
	assert_string_equal(f->id.subject, "alice@example.com");
	assert_true(f->id.authenticated);
	assert_int_equal(auth_from(f, NULL, "::1", lower), 0);
	assert_string_equal(f->id.subject, "bob");
	assert_int_equal(auth_from(f, NULL, "::ffff:127.0.0.1", user), 0);
	/* From an untrusted peer the header is ignored: no credential at all. */
	assert_int_equal(auth_from(f, NULL, "192.0.2.1", user), -1);
	assert_non_null(strstr(f->err, "no credential"));
	assert_int_equal(auth_from(f, NULL, "127.0.0.2", user), -1);
	f->auth.none = true;
	assert_int_equal(auth_from(f, NULL, "192.0.2.1", user), 0);
	assert_string_equal(f->id.method, "none");
	assert_false(f->id.authenticated);
	/* Trusted peer, invalid header: 401, not none. */
	assert_int_equal(auth_from(f, NULL, "10.0.0.1", twice), -1);
	assert_int_equal(auth_from(f, NULL, "10.0.0.1", empty), -1);
	assert_int_equal(auth_from(f, NULL, "10.0.0.1", ctrl), -1);
	snprintf(longv, sizeof(longv), "X-Forwarded-User: %0257d", 0);
	assert_int_equal(auth_from(f, NULL, "10.0.0.1", longh), -1);
	snprintf(longv, sizeof(longv), "X-Forwarded-User: %0256d", 0);
	assert_int_equal(auth_from(f, NULL, "10.0.0.1", longh), 0);
	assert_int_equal(strlen(f->id.subject), 256);
	/* Trusted peer without the header: none. */
	assert_int_equal(auth_from(f, NULL, "10.0.0.1", none), 0);
	assert_string_equal(f->id.method, "none");
	/* An Authorization header no mode checks is refused, proxy header or not. */
	assert_int_equal(auth_from(f, "Bearer whatever", "10.0.0.1", user), -1);
	/* jwt first: a valid JWT wins; an invalid one is final. */
	f->auth.jwt.enabled = true;
	snprintf(f->hdr, sizeof(f->hdr), "Bearer %s", PY_HS256);
	assert_int_equal(auth_from(f, f->hdr, "10.0.0.1", user), 0);
	assert_string_equal(f->id.method, "jwt");
	assert_int_equal(auth_from(f, "Bearer a.b.c", "10.0.0.1", user), -1);
	free(f->auth.proxy.from);
	f->auth.proxy.from = NULL;
}

static void t_forwarded_for(void **state)
{
	struct fx *f = *state;
	static const char *const nets[] = {"10.0.0.0/8", "::1/128", NULL};
	static const char *const chain[] = {"X-Forwarded-For: 203.0.113.7, 10.0.0.5", NULL};
	static const char *const spoof[] = {"X-Forwarded-For: 1.1.1.1, 203.0.113.7, 10.0.0.5", NULL};
	static const char *const all_trusted[] = {"X-Forwarded-For: 10.9.9.9,10.0.0.5", NULL};
	static const char *const two_lines[] = {"X-Forwarded-For: 198.51.100.1", "x-forwarded-for: 10.1.1.1",
	                                        NULL};
	static const char *const junk[] = {"X-Forwarded-For: 203.0.113.7, nonsense, 10.0.0.5", NULL};
	static const char *const junk_right[] = {"X-Forwarded-For: 203.0.113.7, 10.0.0.5, nonsense", NULL};
	static const char *const v6[] = {"X-Forwarded-For: 2001:db8::1, ::1", NULL};
	static const char *const empty_entry[] = {"X-Forwarded-For: 203.0.113.7,, 10.0.0.5", NULL};
	static const char *const none[] = {NULL};

	/* Without trusted_proxy the peer is the client, whatever the header says. */
	assert_string_equal(client_ip(f, "10.0.0.1", chain), "10.0.0.1");
	set_proxy(f, nets);
	/* An untrusted peer: its header is ignored. */
	assert_string_equal(client_ip(f, "192.0.2.1", chain), "192.0.2.1");
	/* A trusted peer: the right-most entry that is not a trusted proxy. */
	assert_string_equal(client_ip(f, "10.0.0.1", chain), "203.0.113.7");
	assert_string_equal(client_ip(f, "10.0.0.1", spoof), "203.0.113.7");
	assert_string_equal(client_ip(f, "10.0.0.1", all_trusted), "10.9.9.9");
	assert_string_equal(client_ip(f, "10.0.0.1", two_lines), "198.51.100.1");
	assert_string_equal(client_ip(f, "10.0.0.1", junk), "10.0.0.5");
	assert_string_equal(client_ip(f, "10.0.0.1", junk_right), "10.0.0.1");
	assert_string_equal(client_ip(f, "::1", v6), "2001:db8::1");
	assert_string_equal(client_ip(f, "10.0.0.1", empty_entry), "10.0.0.5");
	assert_string_equal(client_ip(f, "10.0.0.1", none), "10.0.0.1");
	free(f->auth.proxy.from);
	f->auth.proxy.from = NULL;
}

/* Issue 10, M2: a proxy that appends its own line after 16 client lines. The
 * old walk read lines 1..16 only and took the client's 203.0.113.66. */
static void t_forwarded_for_many_lines(void **state)
{
	struct fx *f = *state;
	static const char *const nets[] = {"127.0.0.1/32", NULL};
	const char *lines[20];
	size_t i;

	set_proxy(f, nets);
	for (i = 0; i < 16; i++)
		lines[i] = "X-Forwarded-For: 203.0.113.66";
	lines[16] = "X-Forwarded-For: 198.51.100.7";
	lines[17] = NULL;
	/* 17 lines: more than are read, so refused, never the first 16's answer. */
	assert_string_equal(client_ip(f, "127.0.0.1", lines), "refused");
	/* 16 lines, the proxy's last: read whole, the last line decides. */
	lines[15] = "X-Forwarded-For: 198.51.100.7";
	lines[16] = NULL;
	assert_string_equal(client_ip(f, "127.0.0.1", lines), "198.51.100.7");
	/* From a peer that is not a trusted proxy the header is never read. */
	lines[16] = "X-Forwarded-For: 198.51.100.7";
	lines[17] = NULL;
	assert_string_equal(client_ip(f, "192.0.2.1", lines), "192.0.2.1");
	free(f->auth.proxy.from);
	f->auth.proxy.from = NULL;
}

static void t_ready(void **state)
{
	struct fx *f = *state;

	assert_true(ident_ready(&f->auth));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(t_bearer_ok),
	    T(t_claims_idx_is_absolute),
	    T(t_bearer_malformed),
	    T(t_bad_jwt),
	    T(t_no_credential),
	    T(t_none_mode),
	    T(t_present_invalid_with_none_enabled),
	    T(t_none_only_refuses_any_credential),
	    T(t_nothing_enabled),
	    T(t_client_keys),
	    T(t_bearer_neither),
	    T(t_cidr_parse_and_match),
	    T(t_trusted_proxy),
	    T(t_forwarded_for),
	    T(t_forwarded_for_many_lines),
	    T(t_ready),
	};

	return cmocka_run_group_tests_name("ident", tests, NULL, NULL);
}
