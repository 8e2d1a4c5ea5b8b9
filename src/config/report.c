/*
 * report.c — the text of the loader's messages.
 *
 * Owns config_fail ("<file>: <key>: <reason>") and the cutting of key paths
 * (config_key_printf), which every other file of the loader uses: it sits
 * below them all. It must never echo a value (callers pass key paths and
 * reasons, never what the file holds) and never write past a buffer.
 */
#include <stdarg.h>
#include <stdio.h>

#include "config.h"
#include "loader.h"

/* "<file>: <key>: <reason>". Returns -1 so callers can `return config_fail(...)`. */
__attribute__((format(printf, 3, 4))) int config_fail(struct loader *ld, const char *key, const char *fmt,
                                                      ...)
{
	size_t used;
	va_list ap;
	int n;

	if (!ld->err || ld->errlen == 0)
		return -1;
	n = key ? snprintf(ld->err, ld->errlen, "%s: %s: ", ld->shown, key)
	        : snprintf(ld->err, ld->errlen, "%s: ", ld->shown);
	used = n < 0 ? 0 : (size_t)n;
	if (used >= ld->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(ld->err + used, ld->errlen - used, fmt, ap);
	va_end(ap);
	return -1;
}

/* snprintf for key paths: a path too long for the buffer is cut, never overrun. */
__attribute__((format(printf, 3, 4))) void config_key_printf(char *out, size_t outlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(out, outlen, fmt, ap);
	va_end(ap);
}
