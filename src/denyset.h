/*
 * denyset.h — one deny file's users: an immutable set, shared by reference.
 *
 * A tenant's deny_users file lists users (one id a line) who get no token
 * (killswitch.h). The configuration reads each file at load; the kill
 * switch's watcher reads it again when it changes. A set never changes once
 * built; whoever holds one holds a reference.
 */
#ifndef BROKER_DENYSET_H
#define BROKER_DENYSET_H

#include <stdbool.h>
#include <stddef.h>

/* The largest deny file, and the most ids one may list. */
#define DENYSET_FILE_MAX  (64u * 1024 * 1024)
#define DENYSET_MAX_USERS 1000000u

/* One deny file's users: immutable once built, shared by reference. */
struct denyset;

/* Reads and parses the deny file at path: one user id a line (each valid
 * as a request's user_id), blank lines and lines of "#" then whitespace
 * ignored, surrounding whitespace trimmed. Returns a set (one reference,
 * the caller's) or NULL with the reason (and line) in why, never quoting
 * the file. */
struct denyset *denyset_load(const char *path, char *why, size_t whylen);

/* Same, from text in memory; name is for messages. */
struct denyset *denyset_parse(const char *name, const char *text, size_t len, char *why, size_t whylen);

size_t denyset_size(const struct denyset *s);
bool denyset_has(const struct denyset *s, const char *user_id);
void denyset_ref(struct denyset *s);
void denyset_unref(struct denyset *s); /* NULL is fine */

/* Whether a and b hold the same ids (NULL is the empty set). */
bool denyset_equal(const struct denyset *a, const struct denyset *b);

/* The i-th id in sorted order, i < denyset_size(s). */
const char *denyset_id(const struct denyset *s, size_t i);

#endif
