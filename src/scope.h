/*
 * scope.h — the grammar of user ids and Courier scopes.
 *
 * Courier's scope claim is one space-separated string, so a user id or scope
 * with whitespace would let a caller inject scopes. These checks are the only
 * place that grammar is decided.
 */
#ifndef BROKER_SCOPE_H
#define BROKER_SCOPE_H

#include <stdbool.h>
#include <stddef.h>

#define SCOPE_USER_ID_MAX 256
#define SCOPE_MAX_LEN     128 /* one scope token */

/* 1..256 bytes of valid UTF-8, no whitespace (ASCII or Unicode), no control
 * characters (C0, DEL, C1), no NUL, and nothing invisible: no
 * Default_Ignorable_Code_Point (zero-width characters, bidi controls, Hangul
 * fillers, variation selectors, tags). */
bool scope_user_id_valid(const char *s, size_t len);

/* A scope token's grammar: 1..128 bytes of printable ASCII (0x21..0x7e), so
 * no whitespace, no control bytes. (Whether a "user_id:" scope is acceptable
 * is the envelope's decision, not the grammar's.) */
bool scope_token_valid(const char *s, size_t len);

/* The scope lists of the contract's tiers, NULL-terminated. name is "inbox",
 * "preferences" or "push"; returns NULL for any other name. */
const char *const *scope_tier(const char *name);

#endif
