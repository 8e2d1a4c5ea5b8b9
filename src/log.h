/*
 * log.h — one JSON line per event on stderr.
 *
 * Request lines are tables built by the caller on its own Lua state and
 * encoded with cjson; system lines (start, reload, errors) are formatted here.
 * Nothing secret may be passed in: no key, no credential, no token (tokens
 * only as log_token_hash).
 */
#ifndef BROKER_LOG_H
#define BROKER_LOG_H

#include <stddef.h>

struct lua_State;

/* RFC 3339 UTC time with milliseconds, e.g. "2026-11-23T10:00:00.123Z". */
void log_timestamp(char *buf, size_t len);

/* A system line: {"time":..., "level":..., "msg":...}. */
void log_msg(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * A warning a client can cause at will (one per connection it drops, say):
 * at most LOG_LIMITED_PER_S such lines a second per process, whatever the
 * thread; the rest are only counted, and one "N similar warnings
 * suppressed" line reports them once the second is over.
 */
#define LOG_LIMITED_PER_S 5
void log_warn_limited(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes the "suppressed" line when its second is over. Returns true while
 * suppressed lines still wait to be reported (call again within a second).
 * Costs one atomic load when nothing waits: event loops call it every turn. */
int log_limited_tick(void);

/* Warnings log_warn_limited dropped since start (for /metrics). */
unsigned long long log_suppressed_total(void);

/* From now on (on) the calling thread's lines wait in its buffer until
 * log_flush (or until the buffer is full); off flushes and ends that. */
void log_batch(int on);

/* Writes the calling thread's waiting lines, if any. */
void log_flush(void);

/* Encodes the table at idx on L and writes it as one line. */
void log_table(struct lua_State *L, int idx);

/* First 12 hex chars of SHA-256(token): enough to correlate, useless to replay. */
void log_token_hash(const char *token, size_t len, char out[13]);

#endif
