/*
 * scope.c — the grammar of user ids and scope tokens, and the contract's tiers.
 *
 * Owns the one decision of which bytes may sit inside Courier's space-separated
 * scope claim. A user id is strict UTF-8 (no overlongs, no surrogates, nothing
 * above U+10FFFF) without any whitespace, control or zero-width separator; a
 * scope token is printable ASCII. It must never accept a byte sequence that
 * some reader could split on, never read past len, and never depend on the
 * locale.
 */
#include "scope.h"

#include <stdint.h>
#include <string.h>

/* Code points refused inside a user id beyond C0 and DEL: C1 controls (with
 * U+0085 NEL), Unicode whitespace, and the zero-width characters and BOM that
 * some splitters treat as separators. */
static bool refused_code_point(uint32_t cp)
{
	if (cp >= 0x80 && cp <= 0x9f)
		return true;
	if (cp >= 0x2000 && cp <= 0x200d)
		return true;
	switch (cp) {
	case 0x00a0:
	case 0x1680:
	case 0x180e:
	case 0x2028:
	case 0x2029:
	case 0x202f:
	case 0x205f:
	case 0x3000:
	case 0xfeff:
		return true;
	default:
		return false;
	}
}

bool scope_user_id_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	if (s == NULL || len == 0 || len > SCOPE_USER_ID_MAX)
		return false;
	while (i < len) {
		unsigned char c = p[i];
		uint32_t cp;
		size_t n;

		if (c < 0x80) {
			if (c <= 0x20 || c == 0x7f)
				return false;
			i++;
			continue;
		}
		/* Lead bytes C0, C1 and F5..FF can only start overlong or
		 * out-of-range sequences; 80..BF are continuations. */
		if (c >= 0xc2 && c <= 0xdf) {
			n = 2;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 3;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 4;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i < n)
			return false;
		for (size_t k = 1; k < n; k++) {
			unsigned char b = p[i + k];
			if ((b & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (b & 0x3f);
		}
		if (n == 3 && cp < 0x800)
			return false;
		if (n == 4 && (cp < 0x10000 || cp > 0x10ffff))
			return false;
		if (cp >= 0xd800 && cp <= 0xdfff)
			return false;
		if (refused_code_point(cp))
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
