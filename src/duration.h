/*
 * duration.h — lifetimes written the way Courier reads them.
 *
 * Courier parses "expires_in" like vercel/ms: "1h", "2 days", "2.5 hrs", "5s".
 * A bare number there means milliseconds, so the broker never sends one: it
 * always sends an explicit unit (duration_format). Our own inputs (config,
 * request bodies, policies) refuse a unit-less string for the same reason.
 */
#ifndef BROKER_DURATION_H
#define BROKER_DURATION_H

#include <stddef.h>

/* The longest lifetime anywhere: 10 years of 365.25 days (10 * 365.25 * 86400 s). */
#define DURATION_MAX_S 315576000LL

/*
 * Parses "<number>[ ]<unit>" with units ms, s, m, h, d, w, y and their long
 * forms (sec, secs, second(s), min(s), minute(s), hr(s), hour(s), day(s),
 * week(s), year(s), msec(s), millisecond(s)); case-insensitive; a decimal
 * fraction is allowed ("2.5h"). The result is whole seconds, rounded down.
 * Refuses: no unit, negative, zero, below one second, above 10 years, trailing
 * garbage, over 32 bytes. Returns 0 or -1.
 */
int duration_parse(const char *s, size_t len, long long *seconds);

/* Writes seconds with an explicit unit ("3600s") for Courier. Returns 0 or -1. */
int duration_format(long long seconds, char *buf, size_t buflen);

#endif
