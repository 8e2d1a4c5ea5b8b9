/*
 * duration.c — parsing and writing token lifetimes.
 *
 * Owns the grammar "<number>[ ]<unit>" (vercel/ms units, as Courier reads
 * them) and the explicit-unit form sent to Courier. The arithmetic is exact
 * integer arithmetic on the digits: no strtod, no floating point, no locale.
 * It must never accept a bare number (Courier would read milliseconds), never
 * round a lifetime up, and never read past len.
 */
#include "duration.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define DURATION_MAX_INPUT 32
/* Any integer part above this is over DURATION_MAX_S even in milliseconds. */
#define DURATION_MAX_INT 1000000000000ULL

struct duration_unit {
	const char *name;  /* lower case */
	long long seconds; /* 0: milliseconds */
};

/* vercel/ms's units; a name is matched whole, so "ms" is never "m" + "s". */
/* clang-format off */
static const struct duration_unit duration_units[] = {
	{"milliseconds", 0}, {"millisecond", 0}, {"msecs", 0}, {"msec", 0}, {"ms", 0},
	{"seconds", 1}, {"second", 1}, {"secs", 1}, {"sec", 1}, {"s", 1},
	{"minutes", 60}, {"minute", 60}, {"mins", 60}, {"min", 60}, {"m", 60},
	{"hours", 3600}, {"hour", 3600}, {"hrs", 3600}, {"hr", 3600}, {"h", 3600},
	{"days", 86400}, {"day", 86400}, {"d", 86400},
	{"weeks", 604800}, {"week", 604800}, {"w", 604800},
	{"years", 31557600}, {"year", 31557600}, {"yrs", 31557600}, {"yr", 31557600}, {"y", 31557600},
};
/* clang-format on */

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* ASCII-only case folding: tolower() would depend on the locale. */
static char ascii_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static const struct duration_unit *find_unit(const char *u, size_t len)
{
	for (size_t i = 0; i < sizeof duration_units / sizeof duration_units[0]; i++) {
		const char *name = duration_units[i].name;
		size_t k;

		if (strlen(name) != len)
			continue;
		for (k = 0; k < len; k++)
			if (ascii_lower(u[k]) != name[k])
				break;
		if (k == len)
			return &duration_units[i];
	}
	return NULL;
}

int duration_parse(const char *s, size_t len, long long *seconds)
{
	unsigned long long int_part = 0;
	size_t i = 0, int_digits = 0, frac_start, frac_len = 0;
	const struct duration_unit *unit;
	long long total;

	if (s == NULL || seconds == NULL || len == 0 || len > DURATION_MAX_INPUT)
		return -1;
	if (memchr(s, '\0', len) != NULL)
		return -1;

	while (i < len && is_digit(s[i])) {
		if (int_part > DURATION_MAX_INT)
			return -1;
		int_part = int_part * 10 + (unsigned)(s[i] - '0');
		int_digits++;
		i++;
	}
	frac_start = i;
	if (i < len && s[i] == '.') {
		i++;
		frac_start = i;
		while (i < len && is_digit(s[i]))
			i++;
		frac_len = i - frac_start;
		if (frac_len == 0) /* "1.h" is not a number */
			return -1;
	}
	if (int_digits == 0 && frac_len == 0)
		return -1;
	if (i < len && s[i] == ' ')
		i++;
	if (i == len) /* a bare number: Courier would read milliseconds */
		return -1;
	unit = find_unit(s + i, len - i);
	if (unit == NULL)
		return -1;

	if (unit->seconds == 0) {
		/* floor((I + f) / 1000) == floor(I / 1000) for 0 <= f < 1. */
		if (int_part > (unsigned long long)DURATION_MAX_S * 1000 + 999)
			return -1;
		total = (long long)(int_part / 1000);
	} else {
		long long m = unit->seconds;
		long long carry = 0;

		if (int_part > (unsigned long long)(DURATION_MAX_S / m))
			return -1;
		total = (long long)int_part * m;
		/* floor(0.d1..dk * m), exactly: multiply the fraction by m
		 * digit by digit from the right; what carries past d1 is the
		 * integer part. carry stays below m. */
		for (size_t k = frac_len; k > 0; k--)
			carry = ((long long)(s[frac_start + k - 1] - '0') * m + carry) / 10;
		total += carry;
	}
	if (total < 1 || total > DURATION_MAX_S)
		return -1;
	*seconds = total;
	return 0;
}

int duration_format(long long seconds, char *buf, size_t buflen)
{
	int n;

	if (buf == NULL || buflen == 0)
		return -1;
	buf[0] = '\0';
	if (seconds <= 0)
		return -1;
	n = snprintf(buf, buflen, "%llds", seconds);
	if (n < 0 || (size_t)n >= buflen) {
		buf[0] = '\0';
		return -1;
	}
	return 0;
}
