/*
 * test_envelope.c — unit tests for src/envelope.c.
 *
 * Owns the proof that no decision a policy can return gets past the tenant's
 * ceiling: one user_id scope for the right user, only allowed scopes, capped
 * lifetimes with an explicit unit, and an empty grant on any error. The tenant
 * is built by hand; nothing is loaded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "envelope.h"

static char *push_scopes[] = {
    (char *)"inbox:read:messages", (char *)"inbox:write:events",
    (char *)"read:brands",         (char *)"read:preferences",
    (char *)"write:preferences",   (char *)"read:user-tokens",
    (char *)"write:user-tokens",   NULL,
};

static struct tenant make_tenant(void)
{
	struct tenant t;
	memset(&t, 0, sizeof t);
	t.name = (char *)"default";
	t.max_expires_s = 7 * 86400;
	t.default_expires_s = 3600;
	t.allowed_scopes = push_scopes;
	t.n_allowed_scopes = 7;
	return t;
}

static void make_decision(struct decision *d, const char *const *scopes, long long expires_s)
{
	memset(d, 0, sizeof *d);
	d->allow = true;
	d->expires_s = expires_s;
	for (size_t i = 0; scopes != NULL && scopes[i] != NULL; i++)
		assert_int_equal(envelope_add_scope(d, scopes[i], strlen(scopes[i])), 0);
}

/* The grant must be empty after a refusal, and the error must say why. */
static void assert_refused(const struct tenant *t, const char *user, const struct decision *d,
                           const char *want_in_err)
{
	struct grant g;
	char err[256] = "unset";

	memset(&g, 'X', sizeof g);
	assert_int_equal(envelope_apply(t, user, d, &g, err, sizeof err), -1);
	if (strstr(err, want_in_err) == NULL)
		fail_msg("error \"%s\" does not contain \"%s\"", err, want_in_err);
	assert_string_equal(g.scope, "");
	assert_string_equal(g.courier_expires, "");
	assert_int_equal(g.expires_s, 0);
}

static void test_add_scope(void **state)
{
	struct decision d;
	(void)state;
	memset(&d, 0, sizeof d);
	assert_int_equal(envelope_add_scope(&d, "read:brandsXXX", 11), 0);
	assert_int_equal(d.n_scopes, 1);
	assert_string_equal(d.scopes[0], "read:brands");
	assert_int_equal(envelope_add_scope(&d, "inbox:write:events", 18), 0);
	assert_string_equal(d.scopes[0], "read:brands");
	assert_string_equal(d.scopes[1], "inbox:write:events");
	assert_int_equal(d.strbuf_used, 12 + 19);
	assert_int_equal(envelope_add_scope(&d, "a\0b", 3), -1); /* would be cut at NUL */
	assert_int_equal(envelope_add_scope(NULL, "x", 1), -1);
	assert_int_equal(envelope_add_scope(&d, NULL, 1), -1);
	assert_int_equal(d.n_scopes, 2);
}

static void test_add_scope_limits(void **state)
{
	struct decision d;
	static char big[sizeof d.strbuf + 8];
	(void)state;

	memset(&d, 0, sizeof d);
	for (int i = 0; i < DECISION_MAX_SCOPES; i++)
		assert_int_equal(envelope_add_scope(&d, "x", 1), 0);
	assert_int_equal(envelope_add_scope(&d, "x", 1), -1);
	assert_int_equal(d.n_scopes, DECISION_MAX_SCOPES);

	/* strbuf fills before the count: 31 * 129 = 3999 of 4096. */
	memset(&d, 0, sizeof d);
	memset(big, 'a', sizeof big);
	for (int i = 0; i < 31; i++)
		assert_int_equal(envelope_add_scope(&d, big, 128), 0);
	assert_int_equal(envelope_add_scope(&d, big, 128), -1);
	assert_int_equal(d.n_scopes, 31);
	assert_int_equal(envelope_add_scope(&d, big, 96), 0); /* 3999 + 97 = 4096 exactly */
	assert_int_equal(d.strbuf_used, sizeof d.strbuf);
	assert_int_equal(d.scopes[31][96], '\0');

	memset(&d, 0, sizeof d);
	assert_int_equal(envelope_add_scope(&d, big, sizeof d.strbuf), -1);
	assert_int_equal(envelope_add_scope(&d, big, sizeof d.strbuf - 1), 0);
	assert_int_equal(envelope_add_scope(&d, "", 0), -1);
}

static void test_scope_allowed(void **state)
{
	struct tenant t = make_tenant();
	(void)state;
	assert_true(envelope_scope_allowed(&t, "read:brands", 11));
	assert_true(envelope_scope_allowed(&t, "read:brandsXYZ", 11));
	assert_false(envelope_scope_allowed(&t, "read:brands", 10));
	assert_false(envelope_scope_allowed(&t, "read:brands:1", 13));
	assert_false(envelope_scope_allowed(&t, "write:brands", 12));
	assert_false(envelope_scope_allowed(&t, "", 0));
	assert_false(envelope_scope_allowed(&t, NULL, 0));
	assert_false(envelope_scope_allowed(NULL, "read:brands", 11));
	/* The count bounds the list as much as the NULL does. */
	t.n_allowed_scopes = 2;
	assert_true(envelope_scope_allowed(&t, "inbox:write:events", 18));
	assert_false(envelope_scope_allowed(&t, "read:brands", 11));
	t.allowed_scopes = NULL;
	assert_false(envelope_scope_allowed(&t, "inbox:write:events", 18));
}

static void test_user_id_added(void **state)
{
	static const char *const scopes[] = {"inbox:read:messages", "inbox:write:events", "read:brands",
	                                     NULL};
	struct tenant t = make_tenant();
	struct decision d;
	struct grant g;
	char err[256];
	(void)state;

	make_decision(&d, scopes, 0);
	assert_int_equal(envelope_apply(&t, "alice", &d, &g, err, sizeof err), 0);
	assert_string_equal(g.scope, "user_id:alice inbox:read:messages inbox:write:events read:brands");
	assert_int_equal(g.expires_s, 3600);
	assert_false(g.capped);
	assert_string_equal(g.courier_expires, "3600s");

	make_decision(&d, NULL, 600);
	assert_int_equal(envelope_apply(&t, "Zo\xc3\xab", &d, &g, err, sizeof err), 0);
	assert_string_equal(g.scope, "user_id:Zo\xc3\xab");
	assert_string_equal(g.courier_expires, "600s");
}

static void test_own_user_id_deduplicated(void **state)
{
	static const char *const first[] = {"user_id:alice", "read:brands", "user_id:alice", NULL};
	static const char *const utf8[] = {"user_id:Zo\xc3\xab", "read:brands", NULL};
	struct tenant t = make_tenant();
	struct decision d;
	struct grant g;
	char err[256];
	(void)state;

	make_decision(&d, first, 0);
	assert_int_equal(envelope_apply(&t, "alice", &d, &g, err, sizeof err), 0);
	assert_string_equal(g.scope, "user_id:alice read:brands");

	/* The user's own scope is accepted even when it is not ASCII. */
	make_decision(&d, utf8, 0);
	assert_int_equal(envelope_apply(&t, "Zo\xc3\xab", &d, &g, err, sizeof err), 0);
	assert_string_equal(g.scope, "user_id:Zo\xc3\xab read:brands");
}

static void test_other_user_id_refused(void **state)
{
	static const char *const other[] = {"read:brands", "user_id:bob", NULL};
	static const char *const prefix[] = {"user_id:alic", NULL};
	static const char *const longer[] = {"user_id:alice2", NULL};
	static const char *const empty[] = {"user_id:", NULL};
	static const char *const cased[] = {"user_id:Alice", NULL};
	struct tenant t = make_tenant();
	struct decision d;
	(void)state;

	make_decision(&d, other, 0);
	assert_refused(&t, "alice", &d, "policy asked for another user's scope");
	make_decision(&d, prefix, 0);
	assert_refused(&t, "alice", &d, "another user's scope");
	make_decision(&d, longer, 0);
	assert_refused(&t, "alice", &d, "another user's scope");
	make_decision(&d, empty, 0);
	assert_refused(&t, "alice", &d, "another user's scope");
	make_decision(&d, cased, 0);
	assert_refused(&t, "alice", &d, "another user's scope");

	/* Even a tenant that lists it cannot hand out another user's id. */
	static char *with_bob[] = {(char *)"read:brands", (char *)"user_id:bob", NULL};
	t.allowed_scopes = with_bob;
	t.n_allowed_scopes = 2;
	make_decision(&d, other, 0);
	assert_refused(&t, "alice", &d, "another user's scope");
}

static void test_scope_outside_allow_list(void **state)
{
	static const char *const outside[] = {"read:brands", "write:brands", NULL};
	static const char *const near[] = {"read:brands:1", NULL};
	static const char *const injected[] = {"read:brands write:brands", NULL};
	static const char *const ctl[] = {"read:brands\n{\"level\":\"x\"}", NULL};
	struct tenant t = make_tenant();
	struct decision d;
	char err[256];
	struct grant g;
	(void)state;

	make_decision(&d, outside, 0);
	assert_refused(&t, "alice", &d, "\"write:brands\"");
	make_decision(&d, near, 0);
	assert_refused(&t, "alice", &d, "read:brands:1");
	make_decision(&d, injected, 0);
	assert_refused(&t, "alice", &d, "invalid scope");

	/* The offending scope is named, with control bytes escaped. */
	make_decision(&d, ctl, 0);
	assert_refused(&t, "alice", &d, "read:brands\\x0a");
	assert_int_equal(envelope_apply(&t, "alice", &d, &g, err, sizeof err), -1);
	assert_null(strchr(err, '\n'));

	/* A tenant with an empty allow-list grants only the user id. */
	static char *none[] = {NULL};
	t.allowed_scopes = none;
	t.n_allowed_scopes = 0;
	make_decision(&d, near, 0);
	assert_refused(&t, "alice", &d, "allowed_scopes");
}

static void test_duplicate_scopes(void **state)
{
	static const char *const dup[] = {"read:brands",         "inbox:read:messages", "read:brands",
	                                  "inbox:read:messages", "read:brands",         NULL};
	struct tenant t = make_tenant();
	struct decision d;
	struct grant g;
	char err[256];
	(void)state;

	make_decision(&d, dup, 0);
	assert_int_equal(envelope_apply(&t, "alice", &d, &g, err, sizeof err), 0);
	assert_string_equal(g.scope, "user_id:alice read:brands inbox:read:messages");
}

static void test_lifetime(void **state)
{
	struct tenant t = make_tenant();
	struct decision d;
	struct grant g;
	char err[256];
	(void)state;

	/* Default when the policy gives none. */
	make_decision(&d, NULL, 0);
	assert_int_equal(envelope_apply(&t, "alice", &d, &g, err, sizeof err), 0);
	assert_int_equal(g.expires_s, 3600);
	assert_false(g.capped);
	assert_string_equal(g.courier_expires, "3600s");

	/* Exactly the ceiling is not capped. */
	make_decision(&d, NULL, 7 * 86400);
	assert_int_equal(envelope_apply(&t, "alice", &d, &g, err, sizeof err), 0);
	assert_int_equal(g.expires_s, 7 * 86400);
	assert_false(g.capped);

	/* Above: capped, and said so. */
	make_decision(&d, NULL, 7 * 86400 + 1);
	assert_int_equal(envelope_apply(&t, "alice", &d, &g, err, sizeof err), 0);
	assert_int_equal(g.expires_s, 7 * 86400);
	assert_true(g.capped);
	assert_string_equal(g.courier_expires, "604800s");

	make_decision(&d, NULL, 315576000);
	assert_int_equal(envelope_apply(&t, "alice", &d, &g, err, sizeof err), 0);
	assert_int_equal(g.expires_s, 7 * 86400);
	assert_true(g.capped);

	/* A default above the ceiling is capped too. */
	t.default_expires_s = 30 * 86400;
	make_decision(&d, NULL, 0);
	assert_int_equal(envelope_apply(&t, "alice", &d, &g, err, sizeof err), 0);
	assert_int_equal(g.expires_s, 7 * 86400);
	assert_true(g.capped);

	make_decision(&d, NULL, 1);
	assert_int_equal(envelope_apply(&t, "alice", &d, &g, err, sizeof err), 0);
	assert_int_equal(g.expires_s, 1);
	assert_string_equal(g.courier_expires, "1s");
}

static void test_lifetime_refused(void **state)
{
	struct tenant t = make_tenant();
	struct decision d;
	(void)state;

	make_decision(&d, NULL, -1);
	assert_refused(&t, "alice", &d, "negative lifetime");

	t.default_expires_s = 0;
	make_decision(&d, NULL, 0);
	assert_refused(&t, "alice", &d, "lifetime must be positive");

	t.default_expires_s = -5;
	assert_refused(&t, "alice", &d, "lifetime must be positive");

	t = make_tenant();
	t.max_expires_s = 0;
	make_decision(&d, NULL, 60);
	assert_refused(&t, "alice", &d, "max_expires_in");
}

static void test_courier_expires_has_unit(void **state)
{
	static const long long lifetimes[] = {1, 59, 60, 3600, 86399, 604800};
	struct tenant t = make_tenant();
	struct decision d;
	struct grant g;
	char err[256];
	(void)state;

	for (size_t i = 0; i < sizeof lifetimes / sizeof lifetimes[0]; i++) {
		char want[32];
		size_t n;
		make_decision(&d, NULL, lifetimes[i]);
		assert_int_equal(envelope_apply(&t, "alice", &d, &g, err, sizeof err), 0);
		n = strlen(g.courier_expires);
		assert_true(n >= 2);
		assert_true(g.courier_expires[n - 1] < '0' || g.courier_expires[n - 1] > '9');
		snprintf(want, sizeof want, "%llds", lifetimes[i]);
		assert_string_equal(g.courier_expires, want);
	}
}

static void test_deny_refused(void **state)
{
	static const char *const scopes[] = {"read:brands", NULL};
	struct tenant t = make_tenant();
	struct decision d;
	(void)state;

	make_decision(&d, scopes, 0);
	d.allow = false;
	assert_refused(&t, "alice", &d, "does not allow");
}

static void test_bad_user_id_refused(void **state)
{
	struct tenant t = make_tenant();
	struct decision d;
	char big[300];
	(void)state;

	make_decision(&d, NULL, 0);
	assert_refused(&t, "alice bob", &d, "user id");
	assert_refused(&t, "", &d, "user id");
	assert_refused(&t,
	               "alice\xc2\xa0"
	               "bob",
	               &d, "user id");
	memset(big, 'a', sizeof big);
	big[257] = '\0';
	assert_refused(&t, big, &d, "user id");
	big[256] = '\0';
	struct grant g;
	char err[256];
	assert_int_equal(envelope_apply(&t, big, &d, &g, err, sizeof err), 0);
	assert_int_equal(strlen(g.scope), 8 + 256);
}

static void test_bad_arguments(void **state)
{
	struct tenant t = make_tenant();
	struct decision d;
	struct grant g;
	char err[64];
	(void)state;

	make_decision(&d, NULL, 0);
	assert_int_equal(envelope_apply(NULL, "alice", &d, &g, err, sizeof err), -1);
	assert_int_equal(envelope_apply(&t, NULL, &d, &g, err, sizeof err), -1);
	assert_int_equal(envelope_apply(&t, "alice", NULL, &g, err, sizeof err), -1);
	assert_int_equal(envelope_apply(&t, "alice", &d, NULL, err, sizeof err), -1);
	/* No error buffer is fine. */
	assert_int_equal(envelope_apply(&t, "alice", &d, &g, NULL, 0), 0);
	/* A count past the array is refused before any scope is read. */
	for (int i = 0; i < DECISION_MAX_SCOPES; i++)
		assert_int_equal(envelope_add_scope(&d, "read:brands", 11), 0);
	assert_int_equal(envelope_apply(&t, "alice", &d, &g, NULL, 0), 0);
	assert_string_equal(g.scope, "user_id:alice read:brands");
	d.n_scopes = DECISION_MAX_SCOPES + 1;
	assert_refused(&t, "alice", &d, "more than 32 scopes");
	d.n_scopes = 1;
	d.scopes[0] = NULL;
	assert_refused(&t, "alice", &d, "scope");
}

static void test_32_scopes(void **state)
{
	static char names[DECISION_MAX_SCOPES][32];
	static char *allowed[DECISION_MAX_SCOPES + 1];
	struct tenant t = make_tenant();
	struct decision d;
	struct grant g;
	char err[256];
	char want[2048];
	size_t w;
	(void)state;

	w = (size_t)snprintf(want, sizeof want, "user_id:alice");
	memset(&d, 0, sizeof d);
	d.allow = true;
	for (int i = 0; i < DECISION_MAX_SCOPES; i++) {
		snprintf(names[i], sizeof names[i], "read:brands:b%02d", i);
		allowed[i] = names[i];
		assert_int_equal(envelope_add_scope(&d, names[i], strlen(names[i])), 0);
		w += (size_t)snprintf(want + w, sizeof want - w, " %s", names[i]);
	}
	allowed[DECISION_MAX_SCOPES] = NULL;
	assert_int_equal(envelope_add_scope(&d, "read:brands", 11), -1);
	t.allowed_scopes = allowed;
	t.n_allowed_scopes = DECISION_MAX_SCOPES;
	assert_int_equal(envelope_apply(&t, "alice", &d, &g, err, sizeof err), 0);
	assert_string_equal(g.scope, want);
}

static void test_longest_grant_fits(void **state)
{
	/* 256-byte user id and 32 scopes of 128 bytes would not fit in strbuf;
	 * 31 of 128 do, and the grant holds them. */
	static char names[31][129];
	static char *allowed[32];
	struct tenant t = make_tenant();
	struct decision d;
	struct grant g;
	char err[256];
	char user[257];
	(void)state;

	memset(user, 'u', 256);
	user[256] = '\0';
	memset(&d, 0, sizeof d);
	d.allow = true;
	for (int i = 0; i < 31; i++) {
		memset(names[i], 'a' + (i % 26), 128);
		names[i][0] = (char)('A' + i % 26);
		names[i][1] = (char)('0' + i / 26);
		names[i][128] = '\0';
		allowed[i] = names[i];
		assert_int_equal(envelope_add_scope(&d, names[i], 128), 0);
	}
	allowed[31] = NULL;
	t.allowed_scopes = allowed;
	t.n_allowed_scopes = 31;
	assert_int_equal(envelope_apply(&t, user, &d, &g, err, sizeof err), 0);
	assert_int_equal(strlen(g.scope), 8 + 256 + 31 * 129);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_add_scope),
	    cmocka_unit_test(test_add_scope_limits),
	    cmocka_unit_test(test_scope_allowed),
	    cmocka_unit_test(test_user_id_added),
	    cmocka_unit_test(test_own_user_id_deduplicated),
	    cmocka_unit_test(test_other_user_id_refused),
	    cmocka_unit_test(test_scope_outside_allow_list),
	    cmocka_unit_test(test_duplicate_scopes),
	    cmocka_unit_test(test_lifetime),
	    cmocka_unit_test(test_lifetime_refused),
	    cmocka_unit_test(test_courier_expires_has_unit),
	    cmocka_unit_test(test_deny_refused),
	    cmocka_unit_test(test_bad_user_id_refused),
	    cmocka_unit_test(test_bad_arguments),
	    cmocka_unit_test(test_32_scopes),
	    cmocka_unit_test(test_longest_grant_fits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
