/*
 * test_scope.c — unit tests for src/scope.c.
 *
 * Owns the proof that no user id able to inject a scope into Courier's
 * space-separated claim gets through, and that the tiers are the contract's.
 * Must never test through anything but scope.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "scope.h"

static bool uid(const char *s)
{
	return scope_user_id_valid(s, strlen(s));
}

static bool tok(const char *s)
{
	return scope_token_valid(s, strlen(s));
}

/* The user id "a<cp>b" with cp encoded as UTF-8. */
static bool uid_with(uint32_t cp)
{
	char b[8];
	size_t n = 0;

	b[n++] = 'a';
	if (cp < 0x80) {
		b[n++] = (char)cp;
	} else if (cp < 0x800) {
		b[n++] = (char)(0xc0 | (cp >> 6));
		b[n++] = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		b[n++] = (char)(0xe0 | (cp >> 12));
		b[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[n++] = (char)(0x80 | (cp & 0x3f));
	} else {
		b[n++] = (char)(0xf0 | (cp >> 18));
		b[n++] = (char)(0x80 | ((cp >> 12) & 0x3f));
		b[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[n++] = (char)(0x80 | (cp & 0x3f));
	}
	b[n++] = 'b';
	return scope_user_id_valid(b, n);
}

static void test_user_id_ordinary(void **state)
{
	(void)state;
	assert_true(uid("alice"));
	assert_true(uid("a"));
	assert_true(uid("user@example.com"));
	assert_true(uid("usr_01HZX3-9f:tenant/42"));
	assert_true(uid("Zoë"));                      /* U+00EB, 2 bytes */
	assert_true(uid("\xe7\x94\xa8\xe6\x88\xb7")); /* 用户, 3 bytes each */
	assert_true(uid("\xf0\x9f\x98\x80"));         /* U+1F600, 4 bytes */
	assert_true(uid("\xf4\x8f\xbf\xbf"));         /* U+10FFFF, the last code point */
	assert_true(uid("\xc2\xa1"));                 /* U+00A1 right after NBSP */
	assert_true(uid_with(0x00a1));
	assert_true(uid_with(0x1fff));
	assert_true(uid_with(0x2010)); /* a hyphen, right after the refused U+200F */
	assert_true(uid_with(0x2030));
	assert_true(uid_with(0x3001));
	assert_true(uid_with(0xfefe));
	assert_true(uid_with(0xd7ff));
	assert_true(uid_with(0xe000));
}

static void test_user_id_ascii_whitespace_and_controls(void **state)
{
	(void)state;
	assert_false(uid("alice bob"));
	assert_false(uid("alice inbox:write:events"));
	assert_false(uid("alice\tx"));
	assert_false(uid("alice\nx"));
	assert_false(uid("alice\rx"));
	assert_false(uid("alice\vx"));
	assert_false(uid("alice\fx"));
	assert_false(uid(" alice"));
	assert_false(uid("alice "));
	assert_false(uid("alice\x7f"));
	assert_false(uid("\x01"));
	assert_false(uid("a\x1b[31m"));
	for (unsigned c = 0; c <= 0x20; c++)
		assert_false(uid_with(c));
	assert_false(uid_with(0x7f));
	assert_true(uid_with(0x21));
	assert_true(uid_with(0x7e));
}

static void test_user_id_nul_inside(void **state)
{
	(void)state;
	assert_false(scope_user_id_valid("alice\0bob", 9));
	assert_false(scope_user_id_valid("\0", 1));
	assert_false(scope_user_id_valid("alice\0", 6));
	assert_true(scope_user_id_valid("alice\0bob", 5)); /* len is the bound */
}

/* Issue 10, L7: invisible and bidi code points made look-alike user ids. */
static void test_user_id_invisible_and_bidi(void **state)
{
	static const uint32_t refused[] = {
	    0x00ad,  0x034f,  0x061c,  0x115f,  0x1160,  0x17b4,  0x17b5,  0x180b,  0x180f,  0x200b,  0x200e,
	    0x200f,  0x202a,  0x202b,  0x202c,  0x202d,  0x202e,  0x2060,  0x2061,  0x2064,  0x2065,  0x2066,
	    0x2067,  0x2068,  0x2069,  0x206f,  0x3164,  0xfe00,  0xfe0f,  0xfeff,  0xffa0,  0xfff0,  0xfff8,
	    0x1bca0, 0x1bca3, 0x1d173, 0x1d17a, 0xe0000, 0xe0001, 0xe0041, 0xe007f, 0xe0100, 0xe01ef, 0xe0fff,
	};
	static const uint32_t allowed[] = {0x00ac,  0x00ae,  0x034e,  0x0350,  0x061b,  0x061d, 0x115e,
	                                   0x1161,  0x17b3,  0x17b6,  0x180a,  0x1810,  0x2070, 0x3163,
	                                   0x3165,  0xfdff,  0xfe10,  0xff9f,  0xffa1,  0xffef, 0xfff9,
	                                   0x1bc9f, 0x1bca4, 0x1d172, 0x1d17b, 0xdffff, 0xe1000};

	(void)state;
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		if (uid_with(refused[i]))
			fail_msg("U+%04X accepted", (unsigned)refused[i]);
	for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
		if (!uid_with(allowed[i]))
			fail_msg("U+%04X refused", (unsigned)allowed[i]);
}

static void test_user_id_c1_controls(void **state)
{
	(void)state;
	for (uint32_t cp = 0x80; cp <= 0x9f; cp++)
		assert_false(uid_with(cp));
	assert_false(uid("a\xc2\x85"
	                 "b")); /* NEL */
	assert_false(uid("a\xc2\x80"));
	assert_false(uid("a\xc2\x9f"));
}

static void test_user_id_unicode_whitespace(void **state)
{
	static const uint32_t refused[] = {0x00a0, 0x1680, 0x180e, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004,
	                                   0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x200b, 0x200c,
	                                   0x200d, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff, 0x0085};
	(void)state;
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
		assert_false(uid_with(refused[i]));
	assert_false(uid("alice\xc2\xa0"
	                 "bob")); /* NBSP */
	assert_false(uid("alice\xe2\x80\xa8"
	                 "bob")); /* LINE SEPARATOR */
	assert_false(uid("alice\xe3\x80\x80"
	                 "bob")); /* IDEOGRAPHIC SPACE */
	assert_false(uid("\xef\xbb\xbf"
	                 "alice")); /* BOM */
}

static void test_user_id_invalid_utf8(void **state)
{
	(void)state;
	assert_false(uid("\x80")); /* lone continuation */
	assert_false(uid("a\xbf"));
	assert_false(uid("\xc3"));     /* truncated 2-byte */
	assert_false(uid("\xc3x"));    /* bad continuation */
	assert_false(uid("\xc3\xc3")); /* a lead byte where a continuation belongs */
	assert_false(uid("\xc3\xe9"));
	assert_false(uid("\xe2\x82\xc0"));
	assert_false(uid("\xf0\x9f\xf0\x80"));
	assert_false(uid("\xe2\xc3\xa9"));
	assert_false(uid("\xe2\x82"));     /* truncated 3-byte */
	assert_false(uid("\xf0\x9f\x98")); /* truncated 4-byte */
	assert_false(uid("\xf0\x9f\x98x"));
	assert_false(uid("\xed\xa0\x80"));             /* U+D800, surrogate */
	assert_false(uid("\xed\xbf\xbf"));             /* U+DFFF */
	assert_false(uid("\xed\xa0\xbd\xed\xb8\x80")); /* CESU-8 pair */
	assert_false(uid("\xf4\x90\x80\x80"));         /* U+110000 */
	assert_false(uid("\xf5\x80\x80\x80"));
	assert_false(uid("\xfe"));
	assert_false(uid("\xff"));
	assert_false(uid("\xf8\x88\x80\x80\x80")); /* 5-byte form */
	/* Truncation with the length: a valid sequence cut by len. */
	assert_false(scope_user_id_valid("a\xc3\xa9", 2));
}

static void test_user_id_overlong(void **state)
{
	(void)state;
	assert_false(uid("\xc0\xa0")); /* overlong space */
	assert_false(uid("a\xc0\xa0"
	                 "b"));
	assert_false(uid("\xc1\xbf"));         /* overlong DEL */
	assert_false(uid("\xc0\x80"));         /* overlong NUL */
	assert_false(uid("\xe0\x80\xa0"));     /* 3-byte space */
	assert_false(uid("\xe0\x9f\xbf"));     /* 3-byte U+07FF */
	assert_false(uid("\xf0\x80\x80\xa0")); /* 4-byte space */
	assert_false(uid("\xf0\x8f\xbf\xbf")); /* 4-byte U+FFFF */
	assert_true(uid("\xe0\xa0\x80"));      /* U+0800, shortest form */
	assert_true(uid("\xf0\x90\x80\x80"));  /* U+10000, shortest form */
}

static void test_user_id_length(void **state)
{
	char buf[300];
	(void)state;
	memset(buf, 'x', sizeof buf);
	assert_false(scope_user_id_valid(buf, 0));
	assert_false(uid(""));
	assert_false(scope_user_id_valid(NULL, 5));
	assert_true(scope_user_id_valid(buf, 1));
	assert_true(scope_user_id_valid(buf, 256));
	assert_false(scope_user_id_valid(buf, 257));
	assert_false(scope_user_id_valid(buf, sizeof buf));
	/* 256 bytes of two-byte characters: 128 of them. */
	for (size_t i = 0; i < 256; i += 2) {
		buf[i] = '\xc3';
		buf[i + 1] = '\xa9';
	}
	assert_true(scope_user_id_valid(buf, 256));
	assert_false(scope_user_id_valid(buf, 255)); /* cut mid-character */
}

static void test_scope_token(void **state)
{
	char buf[200];
	(void)state;
	assert_true(tok("inbox:read:messages"));
	assert_true(tok("read:brands:brand_1"));
	assert_true(tok("!"));
	assert_true(tok("~"));
	assert_false(tok(""));
	assert_false(scope_token_valid(NULL, 3));
	assert_false(tok("read:brands write:brands"));
	assert_false(tok("read:brands\t"));
	assert_false(tok("read:brands\n"));
	assert_false(tok("read\x7f"));
	assert_false(tok("read\x1f"));
	assert_false(tok("read:\xc3\xa9"));
	assert_false(tok("read:\xc2\xa0x"));
	assert_false(scope_token_valid("read\0x", 6));
	memset(buf, 'a', sizeof buf);
	assert_true(scope_token_valid(buf, 128));
	assert_false(scope_token_valid(buf, 129));
}

static size_t tier_len(const char *const *t)
{
	size_t n = 0;
	while (t[n] != NULL)
		n++;
	return n;
}

static void test_tiers(void **state)
{
	const char *const *t;
	(void)state;

	t = scope_tier("inbox");
	assert_non_null(t);
	assert_int_equal(tier_len(t), 3);
	assert_string_equal(t[0], "inbox:read:messages");
	assert_string_equal(t[1], "inbox:write:events");
	assert_string_equal(t[2], "read:brands");

	t = scope_tier("preferences");
	assert_non_null(t);
	assert_int_equal(tier_len(t), 5);
	assert_string_equal(t[0], "inbox:read:messages");
	assert_string_equal(t[1], "inbox:write:events");
	assert_string_equal(t[2], "read:brands");
	assert_string_equal(t[3], "read:preferences");
	assert_string_equal(t[4], "write:preferences");

	t = scope_tier("push");
	assert_non_null(t);
	assert_int_equal(tier_len(t), 7);
	assert_string_equal(t[0], "inbox:read:messages");
	assert_string_equal(t[1], "inbox:write:events");
	assert_string_equal(t[2], "read:brands");
	assert_string_equal(t[3], "read:preferences");
	assert_string_equal(t[4], "write:preferences");
	assert_string_equal(t[5], "read:user-tokens");
	assert_string_equal(t[6], "write:user-tokens");
	for (size_t i = 0; t[i] != NULL; i++)
		assert_true(tok(t[i]));

	assert_null(scope_tier("Push"));
	assert_null(scope_tier("admin"));
	assert_null(scope_tier(""));
	assert_null(scope_tier("inbox "));
	assert_null(scope_tier(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_user_id_ordinary),
	    cmocka_unit_test(test_user_id_ascii_whitespace_and_controls),
	    cmocka_unit_test(test_user_id_nul_inside),
	    cmocka_unit_test(test_user_id_c1_controls),
	    cmocka_unit_test(test_user_id_invisible_and_bidi),
	    cmocka_unit_test(test_user_id_unicode_whitespace),
	    cmocka_unit_test(test_user_id_invalid_utf8),
	    cmocka_unit_test(test_user_id_overlong),
	    cmocka_unit_test(test_user_id_length),
	    cmocka_unit_test(test_scope_token),
	    cmocka_unit_test(test_tiers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
