/*
 * scope.c — the grammar of user ids and scope tokens, and the contract's tiers.
 *
 * Owns the one decision of which bytes may sit inside Courier's space-separated
 * scope claim. A user id is strict UTF-8 (no overlongs, no surrogates, nothing
 * above U+10FFFF) without any whitespace, control or default-ignorable
 * (invisible) code point; a scope token is printable ASCII. It must never accept a byte sequence that
 * some reader could split on, never read past len, and never depend on the
 * locale.
 */
#include "scope.h"

#include <stdint.h>
#include <string.h>

#include "utf8.h"

/*
 * Code points refused inside a user id beyond C0 and DEL, sorted, as closed
 * ranges: C1 controls (with U+0085 NEL); Unicode whitespace (White_Space in
 * PropList.txt: U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F,
 * U+205F, U+3000); and Unicode's Default_Ignorable_Code_Point set
 * (DerivedCoreProperties.txt, Unicode 15.1), which holds the zero-width
 * characters, the BOM, the bidi controls (U+061C, U+200E, U+200F,
 * U+202A..U+202E, U+2066..U+2069), the Hangul fillers (U+115F, U+1160,
 * U+3164, U+FFA0), variation selectors and tags: characters that render as
 * nothing, so two user ids that differ only by them look the same. U+180E,
 * once whitespace, is default-ignorable now. Adjacent ranges are merged.
 */
static const struct {
	uint32_t lo, hi;
} refused[] = {
    {0x0080, 0x00a0},   /* C1, NBSP */
    {0x00ad, 0x00ad},   /* soft hyphen */
    {0x034f, 0x034f},   /* combining grapheme joiner */
    {0x061c, 0x061c},   /* Arabic letter mark */
    {0x115f, 0x1160},   /* Hangul choseong/jungseong fillers */
    {0x1680, 0x1680},   /* Ogham space mark */
    {0x17b4, 0x17b5},   /* Khmer inherent vowels */
    {0x180b, 0x180f},   /* Mongolian variation selectors, vowel separator */
    {0x2000, 0x200f},   /* spaces, ZWSP, ZWNJ, ZWJ, LRM, RLM */
    {0x2028, 0x202f},   /* line/paragraph separators, LRE..RLO, NNBSP */
    {0x205f, 0x206f},   /* MMSP, word joiner, invisible operators, isolates */
    {0x3000, 0x3000},   /* ideographic space */
    {0x3164, 0x3164},   /* Hangul filler */
    {0xfe00, 0xfe0f},   /* variation selectors */
    {0xfeff, 0xfeff},   /* BOM / ZWNBSP */
    {0xffa0, 0xffa0},   /* halfwidth Hangul filler */
    {0xfff0, 0xfff8},   /* reserved, default-ignorable */
    {0x1bca0, 0x1bca3}, /* shorthand format controls */
    {0x1d173, 0x1d17a}, /* musical format controls */
    {0xe0000, 0xe0fff}, /* tags, variation selectors 17..256, reserved */
};

static bool refused_code_point(uint32_t cp)
{
	size_t lo = 0, hi = sizeof(refused) / sizeof(refused[0]);

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (cp < refused[mid].lo)
			hi = mid;
		else if (cp > refused[mid].hi)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

bool scope_user_id_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	if (s == NULL || len == 0 || len > SCOPE_USER_ID_MAX)
		return false;
	while (i < len) {
		uint32_t cp;
		size_t n = utf8_decode(p + i, len - i, &cp);

		if (n == 0 || cp <= 0x20 || cp == 0x7f || refused_code_point(cp))
			return false;
		i += n;
	}
	return true;
}

bool scope_token_valid(const char *s, size_t len)
{
	if (s == NULL || len == 0 || len > SCOPE_MAX_LEN)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x21 || c > 0x7e)
			return false;
	}
	return true;
}

/* ---- tiers ---- */

static const char *const tier_inbox[] = {
    "inbox:read:messages",
    "inbox:write:events",
    "read:brands",
    NULL,
};

static const char *const tier_preferences[] = {
    "inbox:read:messages", "inbox:write:events", "read:brands", "read:preferences", "write:preferences", NULL,
};

static const char *const tier_push[] = {
    "inbox:read:messages", "inbox:write:events", "read:brands",       "read:preferences",
    "write:preferences",   "read:user-tokens",   "write:user-tokens", NULL,
};

const char *const *scope_tier(const char *name)
{
	if (name == NULL)
		return NULL;
	if (strcmp(name, "inbox") == 0)
		return tier_inbox;
	if (strcmp(name, "preferences") == 0)
		return tier_preferences;
	if (strcmp(name, "push") == 0)
		return tier_push;
	return NULL;
}
