/*
 * fuzz_duration.c — libFuzzer driver for src/duration.c.
 *
 * Owns the properties every input must keep: the parser never reads past len
 * or crashes, anything it accepts is 1 s .. 10 years and came from at most 32
 * bytes with a unit, and what duration_format writes for it parses back to the
 * same seconds. Must never write outside its own buffers.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "duration.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TEN_YEARS 315576000LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size heap copy, so ASan catches any read past len. */
	char *s = malloc(size ? size : 1);
	char buf[32];
	long long v = -7, w = -7;
	int rc;

	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	rc = duration_parse(s, size, &v);
	if (rc != 0) {
		if (rc != -1 || v != -7)
			abort();
		free(s);
		return 0;
	}
	if (size == 0 || size > 32 || v < 1 || v > TEN_YEARS)
		abort();
	/* A unit is required: the last byte is a letter, never a digit. */
	if (s[size - 1] >= '0' && s[size - 1] <= '9')
		abort();
	if (memchr(s, '\0', size) != NULL || s[0] == ' ' || s[size - 1] == ' ')
		abort();
	if (duration_format(v, buf, sizeof buf) != 0)
		abort();
	if (duration_parse(buf, strlen(buf), &w) != 0 || w != v)
		abort();
	free(s);
	return 0;
}
