/*
 * fuzz_scope.c — libFuzzer driver for src/scope.c.
 *
 * Owns the properties that keep Courier's space-separated scope claim whole:
 * an accepted user id has no ASCII whitespace, control or DEL byte, is well
 * formed UTF-8 by an independent check (the table of well-formed byte
 * sequences, Unicode §3.9 Table 3-7), and holds none of the refused code
 * points; an accepted scope token is printable ASCII. Must never write outside
 * its own buffers.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Table 3-7: the well-formed byte sequences, checked by byte ranges rather
 * than by decoding, so it shares no logic with scope.c. */
static bool well_formed_utf8(const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = p[i];
		uint8_t lo = 0x80, hi = 0xbf;
		size_t k;

		if (c <= 0x7f) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			k = 1;
		else if (c == 0xe0)
			k = 2, lo = 0xa0;
		else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef)
			k = 2;
		else if (c == 0xed)
			k = 2, hi = 0x9f;
		else if (c == 0xf0)
			k = 3, lo = 0x90;
		else if (c >= 0xf1 && c <= 0xf3)
			k = 3;
		else if (c == 0xf4)
			k = 3, hi = 0x8f;
		else
			return false;
		if (n - i - 1 < k)
			return false;
		if (p[i + 1] < lo || p[i + 1] > hi)
			return false;
		for (size_t j = 2; j <= k; j++)
			if (p[i + j] < 0x80 || p[i + j] > 0xbf)
				return false;
		i += k + 1;
	}
	return true;
}

/* The UTF-8 forms of the refused code points above U+007F, as bytes. */
static const char *const refused_utf8[] = {
    "\xc2\xa0",     "\xe1\x9a\x80", "\xe1\xa0\x8e", "\xe2\x80\x80", "\xe2\x80\x81", "\xe2\x80\x82",
    "\xe2\x80\x83", "\xe2\x80\x84", "\xe2\x80\x85", "\xe2\x80\x86", "\xe2\x80\x87", "\xe2\x80\x88",
    "\xe2\x80\x89", "\xe2\x80\x8a", "\xe2\x80\x8b", "\xe2\x80\x8c", "\xe2\x80\x8d", "\xe2\x80\xa8",
    "\xe2\x80\xa9", "\xe2\x80\xaf", "\xe2\x81\x9f", "\xe3\x80\x80", "\xef\xbb\xbf",
};

static void check_user_id(const uint8_t *p, size_t n)
{
	if (n == 0 || n > SCOPE_USER_ID_MAX)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (p[i] <= 0x20 || p[i] == 0x7f)
			abort();
		/* C1 controls are U+0080..U+009F: C2 80..C2 9F. */
		if (p[i] == 0xc2 && i + 1 < n && p[i + 1] <= 0x9f)
			abort();
	}
	if (!well_formed_utf8(p, n))
		abort();
	for (size_t r = 0; r < sizeof refused_utf8 / sizeof refused_utf8[0]; r++)
		if (memmem(p, n, refused_utf8[r], strlen(refused_utf8[r])) != NULL)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size heap copy, so ASan catches any read past len. */
	char *s = malloc(size ? size : 1);

	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	if (scope_user_id_valid(s, size))
		check_user_id(data, size);
	if (scope_token_valid(s, size)) {
		if (size == 0 || size > SCOPE_MAX_LEN)
			abort();
		for (size_t i = 0; i < size; i++)
			if (data[i] < 0x21 || data[i] > 0x7e)
				abort();
		/* Every token is also a valid user id. */
		if (!scope_user_id_valid(s, size))
			abort();
	}
	free(s);
	return 0;
}
