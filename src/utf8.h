/*
 * utf8.h — the one strict UTF-8 decoder, header-only (no object to link).
 *
 * Owns what counts as valid UTF-8 for every part that checks or repairs
 * text: user ids (scope.c), subjects (ident.c), log lines (log.c). Strict:
 * no overlong forms, no surrogates, nothing above U+10FFFF. It must never
 * read past len.
 */
#ifndef BROKER_UTF8_H
#define BROKER_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Decodes the sequence at p (len > 0 bytes available): returns its length
 * (1..4) with the code point in *cp, or 0 when p does not start a valid
 * sequence. */
static inline size_t utf8_decode(const unsigned char *p, size_t len, uint32_t *cp)
{
	unsigned char c = p[0];
	size_t n;
	uint32_t v;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	/* Lead bytes C0, C1 and F5..FF can only start overlong or out-of-range
	 * sequences; 80..BF are continuations. */
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		v = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		v = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		v = c & 0x07;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t k = 1; k < n; k++) {
		if ((p[k] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (p[k] & 0x3f);
	}
	if ((n == 3 && v < 0x800) || (n == 4 && (v < 0x10000 || v > 0x10ffff)) ||
	    (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return n;
}

#endif
