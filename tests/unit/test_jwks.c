/*
 * test_jwks.c — tests for src/jwks.c.
 *
 * JWK documents are built here from keys OpenSSL generates (testkeys.h);
 * tokens are signed with EVP_DigestSign. Covers selection by kid and alg
 * through ident_jwt_verify, file sources,
 * and URL sources against a small HTTP server on loopback: the first fetch,
 * Cache-Control, unknown-kid refetch with its cool-down, shared fetches for
 * concurrent misses, and keeping the last good set when a fetch fails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <lauxlib.h>
#include <lua.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ident.h"
#include "json.h"
#include "jwk.h"
#include "jwks.h"
#include "jwt.h"
#include "testkeys.h"

#define NOW    1700000100LL
#define CLAIMS "{\"sub\":\"alice\",\"exp\":1700003600}"

/* ---- a JWKS server on loopback --------------------------------------------- */

static struct {
	pthread_mutex_t lock;
	int fd;
	unsigned short port;
	char body[65536];
	char cache_control[64];
	int status;
	int delay_ms;
	int requests;
	bool stop;
} srv = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void *serve(void *arg)
{
	(void)arg;
	for (;;) {
		char req[4096], head[256], *body;
		int c = accept(srv.fd, NULL, NULL), status, delay;
		size_t blen;
		if (c < 0)
			return NULL;
		(void)!read(c, req, sizeof(req));
		pthread_mutex_lock(&srv.lock);
		if (srv.stop) {
			pthread_mutex_unlock(&srv.lock);
			close(c);
			return NULL;
		}
		srv.requests++;
		status = srv.status;
		delay = srv.delay_ms;
		body = strdup(srv.body);
		snprintf(head, sizeof(head),
		         "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n%s%s%sContent-Length: %zu\r\n"
		         "Connection: close\r\n\r\n",
		         status, srv.cache_control[0] ? "Cache-Control: " : "", srv.cache_control,
		         srv.cache_control[0] ? "\r\n" : "", strlen(body));
		pthread_mutex_unlock(&srv.lock);
		if (delay)
			usleep((useconds_t)delay * 1000);
		blen = strlen(body);
		(void)!write(c, head, strlen(head));
		(void)!write(c, body, blen);
		free(body);
		close(c);
	}
}

static void server_start(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	pthread_t t;

	srv.fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(srv.fd >= 0);
	assert_int_equal(bind(srv.fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(srv.fd, 64), 0);
	assert_int_equal(getsockname(srv.fd, (struct sockaddr *)&a, &alen), 0);
	srv.port = ntohs(a.sin_port);
	srv.status = 200;
	assert_int_equal(pthread_create(&t, NULL, serve, NULL), 0);
	pthread_detach(t);
}

static void server_set(int status, const char *cache_control, const char *body)
{
	pthread_mutex_lock(&srv.lock);
	srv.status = status;
	snprintf(srv.cache_control, sizeof(srv.cache_control), "%s", cache_control ? cache_control : "");
	snprintf(srv.body, sizeof(srv.body), "%s", body);
	pthread_mutex_unlock(&srv.lock);
}

static int server_requests(void)
{
	int n;

	pthread_mutex_lock(&srv.lock);
	n = srv.requests;
	pthread_mutex_unlock(&srv.lock);
	return n;
}

/* ---- fixture ----------------------------------------------------------------- */

struct fx {
	lua_State *L;
	struct jwt_config cfg;
	char subject[257];
	char err[160];
	char tok[4096];
	char doc[32768];
	char skipped[4096]; /* "index:why;" for each skipped key */
	char path[64];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	f->L = luaL_newstate();
	if (!f->L || json_open(f->L))
		return -1;
	f->cfg.enabled = true;
	f->cfg.rules.algorithms = JWT_RS256 | JWT_PS256 | JWT_ES256 | JWT_ES384 | JWT_EDDSA;
	f->cfg.rules.leeway_s = 30;
	f->cfg.rules.max_token_bytes = 8192;
	f->cfg.rules.subject_claim = "sub";
	snprintf(f->path, sizeof(f->path), "/tmp/test_jwks_%d.json", (int)getpid());
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	ident_jwt_release(&f->cfg);
	unlink(f->path);
	lua_close(f->L);
	free(f);
	return 0;
}

/* {"keys":[jwk, jwk, ...]} from NULL-terminated JWK texts. */
static const char *doc_of(struct fx *f, const char *const *jwks)
{
	size_t n = (size_t)snprintf(f->doc, sizeof(f->doc), "{\"keys\":[");

	for (size_t i = 0; jwks[i]; i++)
		n += (size_t)snprintf(f->doc + n, sizeof(f->doc) - n, "%s%s", i ? "," : "", jwks[i]);
	snprintf(f->doc + n, sizeof(f->doc) - n, "]}");
	return f->doc;
}

static void write_doc(struct fx *f, const char *doc)
{
	FILE *fp = fopen(f->path, "w");

	assert_non_null(fp);
	fputs(doc, fp);
	fclose(fp);
}

static void open_file_source(struct fx *f)
{
	struct jwks_options o = {.enabled = true, .file = f->path};
	char err[256];

	jwks_close(f->cfg.jwks);
	f->cfg.jwks = jwks_open(&o, "test", err, sizeof(err));
	if (!f->cfg.jwks)
		fail_msg("jwks_open: %s", err);
}

static int verify(struct fx *f, const char *tok)
{
	int top = lua_gettop(f->L);
	int rc = ident_jwt_verify(f->L, &f->cfg, tok, strlen(tok), (time_t)NOW, f->subject,
	                          sizeof(f->subject), f->err, sizeof(f->err));

	assert_int_equal(lua_gettop(f->L), top + (rc == 0));
	lua_settop(f->L, top);
	return rc;
}

static const char *mint_kid(struct fx *f, const char *alg, const char *kid, EVP_PKEY *pkey)
{
	char header[400];

	if (kid)
		snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"kid\":\"%s\"}", alg, kid);
	else
		snprintf(header, sizeof(header), "{\"alg\":\"%s\"}", alg);
	return tk_mint(f->tok, header, CLAIMS, alg, pkey);
}

static void expect_refused(struct fx *f, const char *tok, const char *why)
{
	assert_int_equal(verify(f, tok), -1);
	if (!strstr(f->err, why))
		fail_msg("reason \"%s\", expected \"%s\"", f->err, why);
}

/* ---- selection through ident_jwt_verify------------------------------------------- */

static void t_kid_and_alg_selection(void **state)
{
	struct fx *f = *state;
	char a[2048], b[2048], c[512], d[512];
	const char *keys[] = {tk_jwk(tk_key(TK_RSA), "\"kid\":\"r1\",", a, sizeof(a)),
	                      tk_jwk(tk_other_key(TK_RSA), "\"kid\":\"r2\",\"alg\":\"PS256\",", b, sizeof(b)),
	                      tk_jwk(tk_key(TK_P256), "\"kid\":\"e1\",", c, sizeof(c)),
	                      tk_jwk(tk_key(TK_ED25519), "", d, sizeof(d)), NULL};

	write_doc(f, doc_of(f, keys));
	open_file_source(f);
	assert_true(jwks_ready(f->cfg.jwks));

	assert_int_equal(verify(f, mint_kid(f, "RS256", "r1", tk_key(TK_RSA))), 0);
	assert_string_equal(f->subject, "alice");
	assert_int_equal(verify(f, mint_kid(f, "PS256", "r1", tk_key(TK_RSA))), 0);
	assert_int_equal(verify(f, mint_kid(f, "PS256", "r2", tk_other_key(TK_RSA))), 0);
	/* r2 is bound to PS256 by its "alg": RS256 with it is refused. */
	expect_refused(f, mint_kid(f, "RS256", "r2", tk_other_key(TK_RSA)), "not bound to alg");
	/* The right kid, another key's signature. */
	expect_refused(f, mint_kid(f, "RS256", "r1", tk_other_key(TK_RSA)), "bad signature");
	/* A kid naming a key of another type. */
	expect_refused(f, mint_kid(f, "RS256", "e1", tk_key(TK_RSA)), "not bound to alg");
	assert_int_equal(verify(f, mint_kid(f, "ES256", "e1", tk_key(TK_P256))), 0);
	/* No kid: every key bound to the alg is tried. */
	assert_int_equal(verify(f, mint_kid(f, "EdDSA", NULL, tk_key(TK_ED25519))), 0);
	assert_int_equal(verify(f, mint_kid(f, "RS256", NULL, tk_key(TK_RSA))), 0);
	assert_int_equal(verify(f, mint_kid(f, "PS256", NULL, tk_other_key(TK_RSA))), 0);
	/* Unknown kids, kids with path characters: compared exactly, never a path. */
	expect_refused(f, mint_kid(f, "RS256", "r3", tk_key(TK_RSA)), "unknown kid");
	expect_refused(f, mint_kid(f, "RS256", "../../etc/passwd", tk_key(TK_RSA)), "unknown kid");
	expect_refused(f, mint_kid(f, "RS256", "R1", tk_key(TK_RSA)), "unknown kid");
	expect_refused(f, mint_kid(f, "RS256", "r1 ", tk_key(TK_RSA)), "unknown kid");
	/* The EdDSA key has no kid: a token naming one finds nothing. */
	expect_refused(f, mint_kid(f, "EdDSA", "x", tk_key(TK_ED25519)), "unknown kid");
	/* ES384 is allowed but the set has no P-384 key. */
	expect_refused(f, mint_kid(f, "ES384", NULL, tk_key(TK_P384)), "no key for alg");
	/* A jwk header carrying the attacker's own key is ignored. */
	{
		char jwk[512], header[700];
		tk_jwk(tk_key(TK_P384), "", jwk, sizeof(jwk));
		snprintf(header, sizeof(header),
		         "{\"alg\":\"ES384\",\"jwk\":%s,\"jku\":\"http://127.0.0.1/x\"}", jwk);
		tk_mint(f->tok, header, CLAIMS, "ES384", tk_key(TK_P384));
		expect_refused(f, f->tok, "no key for alg");
	}
	/* A file source never refetches. */
	assert_int_equal(jwks_fetch_count(f->cfg.jwks), 1);
}

static void t_file_source_errors(void **state)
{
	struct fx *f = *state;
	struct jwks_options o = {.enabled = true, .file = f->path};

	write_doc(f, "{\"keys\":[]}");
	assert_null(jwks_open(&o, "t", f->err, sizeof(f->err)));
	assert_non_null(strstr(f->err, "no usable key"));
	unlink(f->path);
	assert_null(jwks_open(&o, "t", f->err, sizeof(f->err)));
	assert_non_null(strstr(f->err, "No such file"));
	o.url = "https://example.com/jwks";
	assert_null(jwks_open(&o, "t", f->err, sizeof(f->err)));
	assert_non_null(strstr(f->err, "exactly one"));
	o.file = NULL;
	o.url = "http://example.com/jwks";
	assert_null(jwks_open(&o, "t", f->err, sizeof(f->err)));
	assert_non_null(strstr(f->err, "https://"));
	o.url = "ftp://127.0.0.1/jwks";
	assert_null(jwks_open(&o, "t", f->err, sizeof(f->err)));
	/* Loopback by its address only, not by a name that starts like one. */
	{
		static const char *const refused[] = {"http://127.0.0.1.example.com/jwks",
		                                      "http://127.0.0.1@example.com/",
		                                      "http://localhost.example.com/",
		                                      "http://[::1].example.com/",
		                                      "http://128.0.0.1/",
		                                      "http://[::2]/",
		                                      "http:///jwks",
		                                      "https:///x"};
		for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
			o.url = (char *)refused[i];
			assert_null(jwks_open(&o, "t", f->err, sizeof(f->err)));
			if (!strstr(f->err, "https://") && !strstr(f->err, "user name"))
				fail_msg("%s: %s", refused[i], f->err);
		}
	}
	/* User information is a password in the configuration: refused,
	 * without quoting it. */
	o.url = "https://reader:hunter2@idp.example.com/jwks";
	assert_null(jwks_open(&o, "t", f->err, sizeof(f->err)));
	assert_non_null(strstr(f->err, "must not carry a user name or password"));
	assert_null(strstr(f->err, "hunter2"));
	o.url = "https://127.0.0.1:1/jwks?next=a@b"; /* an @ past the host is not user information */
	assert_null(jwks_open(&o, "t", f->err, sizeof(f->err)));
	assert_non_null(strstr(f->err, "fetching https://127.0.0.1:1/jwks: "));
	/* A query may hold a credential: the error (it goes to the log) names the
	 * URL without it. */
	o.url = "https://127.0.0.1:1/jwks?access_token=s3cr3t#x";
	assert_null(jwks_open(&o, "t", f->err, sizeof(f->err)));
	assert_non_null(strstr(f->err, "fetching https://127.0.0.1:1/jwks: "));
	assert_null(strstr(f->err, "s3cr3t"));
}

/* ---- URL sources ---------------------------------------------------------------- */

static struct jwks *open_url(struct fx *f, long cooldown_s, long min_refresh_s, long max_cache_s)
{
	struct jwks_options o = {.enabled = true,
	                         .min_refresh_s = min_refresh_s,
	                         .max_cache_s = max_cache_s,
	                         .cooldown_s = cooldown_s,
	                         .timeout_ms = 2000};
	char url[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/jwks", srv.port);
	o.url = url;
	return jwks_open(&o, "test", f->err, sizeof(f->err));
}

/* Waits up to 5 s for the fetch counter to reach n. */
static void wait_fetches(struct jwks *src, unsigned long n)
{
	for (int i = 0; i < 500 && jwks_fetch_count(src) < n; i++)
		usleep(10000);
	/* and for that fetch's result to be swapped in */
	usleep(100000);
	assert_true(jwks_fetch_count(src) >= n);
}

static void t_url_first_fetch_and_rotation(void **state)
{
	struct fx *f = *state;
	char a[2048], b[2048];
	const char *one[] = {tk_jwk(tk_key(TK_RSA), "\"kid\":\"old\",", a, sizeof(a)), NULL};
	const char *two[] = {a, tk_jwk(tk_other_key(TK_RSA), "\"kid\":\"new\",", b, sizeof(b)), NULL};
	char old_tok[4096];
	int before;

	/* The first fetch failing fails the open (check and start fail). */
	server_set(500, NULL, "oops");
	assert_null(open_url(f, 1, 60, 3600));
	assert_non_null(strstr(f->err, "HTTP status 500"));
	server_set(200, NULL, "not json");
	assert_null(open_url(f, 1, 60, 3600));
	assert_non_null(strstr(f->err, "not a JSON object"));

	server_set(200, "public, max-age=600", doc_of(f, one));
	f->cfg.jwks = open_url(f, 1, 60, 3600);
	if (!f->cfg.jwks)
		fail_msg("open: %s", f->err);
	assert_true(jwks_ready(f->cfg.jwks));
	assert_int_equal(jwks_fetch_count(f->cfg.jwks), 1);
	snprintf(old_tok, sizeof(old_tok), "%s", mint_kid(f, "RS256", "old", tk_key(TK_RSA)));
	assert_int_equal(verify(f, old_tok), 0);

	/* Rotation: the new kid is refused once, triggers one fetch, then works;
	 * the old token keeps working while its key is published. */
	server_set(200, "max-age=600", doc_of(f, two));
	usleep(1100000); /* past the 1 s cool-down since the first fetch */
	before = server_requests();
	expect_refused(f, mint_kid(f, "RS256", "new", tk_other_key(TK_RSA)), "unknown kid");
	wait_fetches(f->cfg.jwks, 2);
	assert_int_equal(server_requests(), before + 1);
	assert_int_equal(verify(f, mint_kid(f, "RS256", "new", tk_other_key(TK_RSA))), 0);
	assert_int_equal(verify(f, old_tok), 0);
}

static void t_url_cooldown_and_shared_fetch(void **state)
{
	struct fx *f = *state;
	char a[2048];
	const char *one[] = {tk_jwk(tk_key(TK_RSA), "\"kid\":\"k1\",", a, sizeof(a)), NULL};
	int before;

	server_set(200, NULL, doc_of(f, one));
	f->cfg.jwks = open_url(f, 2, 60, 3600);
	assert_non_null(f->cfg.jwks);
	/* Within the cool-down of the first fetch: unknown kids fetch nothing. */
	before = server_requests();
	for (int i = 0; i < 20; i++)
		expect_refused(f, mint_kid(f, "RS256", "nope", tk_key(TK_RSA)), "unknown kid");
	usleep(200000);
	assert_int_equal(server_requests(), before);
	assert_int_equal(jwks_fetch_count(f->cfg.jwks), 1);

	/* After it, a burst of misses (the server slow) shares one fetch. */
	usleep(2000000);
	pthread_mutex_lock(&srv.lock);
	srv.delay_ms = 300;
	pthread_mutex_unlock(&srv.lock);
	for (int i = 0; i < 50; i++)
		jwks_unknown_kid(f->cfg.jwks);
	wait_fetches(f->cfg.jwks, 2);
	for (int i = 0; i < 50; i++)
		jwks_unknown_kid(f->cfg.jwks);
	usleep(500000);
	assert_int_equal(jwks_fetch_count(f->cfg.jwks), 2);
	assert_int_equal(server_requests(), before + 1);
	pthread_mutex_lock(&srv.lock);
	srv.delay_ms = 0;
	pthread_mutex_unlock(&srv.lock);
}

static void t_url_failed_refresh_keeps_set(void **state)
{
	struct fx *f = *state;
	char a[2048];
	const char *one[] = {tk_jwk(tk_key(TK_RSA), "\"kid\":\"k1\",", a, sizeof(a)), NULL};

	/* max-age=0 is clamped up to min_refresh_s = 1: refreshed every second. */
	server_set(200, "max-age=0", doc_of(f, one));
	f->cfg.jwks = open_url(f, 1, 1, 2);
	assert_non_null(f->cfg.jwks);
	server_set(503, NULL, "down");
	wait_fetches(f->cfg.jwks, 3);
	/* Two failed refreshes later, the last good set still verifies. */
	assert_true(jwks_ready(f->cfg.jwks));
	assert_int_equal(verify(f, mint_kid(f, "RS256", "k1", tk_key(TK_RSA))), 0);
	server_set(200, NULL, "{\"keys\":[]}");
	wait_fetches(f->cfg.jwks, jwks_fetch_count(f->cfg.jwks) + 1);
	assert_int_equal(verify(f, mint_kid(f, "RS256", "k1", tk_key(TK_RSA))), 0);
}

static void t_shutdown(void **state)
{
	(void)state;
	/* Every source of the tests above is closed: their threads exit. */
	assert_int_equal(jwks_shutdown(5000), 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(t_kid_and_alg_selection),        T(t_file_source_errors),
	    T(t_url_first_fetch_and_rotation), T(t_url_cooldown_and_shared_fetch),
	    T(t_url_failed_refresh_keeps_set), T(t_shutdown),
	};

	server_start();
	return cmocka_run_group_tests_name("jwks", tests, NULL, NULL);
}
