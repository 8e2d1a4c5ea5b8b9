/*
 * envelope.c — the tenant's ceiling on what a policy may grant.
 *
 * Owns the last check between a policy's decision and Courier: the scope
 * string (exactly one user_id scope, for the user asked for, then allowed
 * scopes without duplicates) and the lifetime (capped, explicit unit). It
 * fails closed: anything it cannot prove fits is an error and an empty grant,
 * never a partial one. It must never trust the policy, never let a grant
 * carry another user's id, and never write past a buffer.
 */
#include "envelope.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "duration.h"
#include "scope.h"

#define USER_ID_PREFIX     "user_id:"
#define USER_ID_PREFIX_LEN (sizeof USER_ID_PREFIX - 1)
/* Longest part of a scope quoted in an error message. */
#define QUOTE_MAX 80

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Scope strings are not secret, but they come from a policy: quote them with
 * every byte outside printable ASCII escaped, so an error message (and the log
 * line made of it) cannot be forged or split. */
static void quote(const char *s, size_t len, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (outlen == 0)
		return;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (i >= QUOTE_MAX || o + 8 >= outlen) {
			if (o + 4 <= outlen) {
				memcpy(out + o, "...", 3);
				o += 3;
			}
			break;
		}
		if (c >= 0x21 && c <= 0x7e && c != '"' && c != '\\') {
			out[o++] = (char)c;
		} else {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 0xf];
		}
	}
	out[o] = '\0';
}

int envelope_add_scope(struct decision *d, const char *scope, size_t len)
{
	if (d == NULL || scope == NULL)
		return -1;
	if (d->n_scopes >= DECISION_MAX_SCOPES)
		return -1;
	/* The copy is a C string: an embedded NUL would silently shorten it. */
	if (memchr(scope, '\0', len) != NULL)
		return -1;
	if (d->strbuf_used > sizeof d->strbuf || len + 1 > sizeof d->strbuf - d->strbuf_used)
		return -1;
	char *dst = d->strbuf + d->strbuf_used;
	memcpy(dst, scope, len);
	dst[len] = '\0';
	d->strbuf_used += len + 1;
	d->scopes[d->n_scopes++] = dst;
	return 0;
}

bool envelope_scope_allowed(const struct tenant *t, const char *scope, size_t len)
{
	if (t == NULL || scope == NULL || t->allowed_scopes == NULL)
		return false;
	for (size_t i = 0; i < t->n_allowed_scopes && t->allowed_scopes[i] != NULL; i++) {
		const char *a = t->allowed_scopes[i];
		if (strlen(a) == len && memcmp(a, scope, len) == 0)
			return true;
	}
	return false;
}

/* Appends len bytes of s to g->scope at *used, keeping it NUL-terminated;
 * -1 if they would not fit. */
static int append_bytes(struct grant *g, size_t *used, const char *s, size_t len)
{
	if (*used >= sizeof g->scope || len >= sizeof g->scope - *used)
		return -1;
	memcpy(g->scope + *used, s, len);
	*used += len;
	g->scope[*used] = '\0';
	return 0;
}

bool envelope_scope_repeats(const struct decision *d, size_t i)
{
	for (size_t j = 0; j < i; j++)
		if (strcmp(d->scopes[j], d->scopes[i]) == 0)
			return true;
	return false;
}

static int apply_scopes(const struct tenant *t, const char *user_id, size_t uid_len, const struct decision *d,
                        struct grant *g, char *err, size_t errlen)
{
	char q[QUOTE_MAX * 4 + 8];
	size_t used = 0;

	if (append_bytes(g, &used, USER_ID_PREFIX, USER_ID_PREFIX_LEN) != 0 ||
	    append_bytes(g, &used, user_id, uid_len) != 0)
		goto overflow;

	for (size_t i = 0; i < d->n_scopes; i++) {
		const char *s = d->scopes[i];
		size_t len;

		if (s == NULL) {
			set_err(err, errlen, "policy returned an empty scope");
			return -1;
		}
		len = strnlen(s, sizeof d->strbuf);
		if (len >= USER_ID_PREFIX_LEN && memcmp(s, USER_ID_PREFIX, USER_ID_PREFIX_LEN) == 0) {
			if (len - USER_ID_PREFIX_LEN == uid_len &&
			    memcmp(s + USER_ID_PREFIX_LEN, user_id, uid_len) == 0)
				continue; /* the user's own: already first */
			quote(s, len, q, sizeof q);
			set_err(err, errlen, "policy asked for another user's scope \"%s\"", q);
			return -1;
		}
		if (!scope_token_valid(s, len)) {
			quote(s, len, q, sizeof q);
			set_err(err, errlen, "policy returned an invalid scope \"%s\"", q);
			return -1;
		}
		if (!envelope_scope_allowed(t, s, len)) {
			quote(s, len, q, sizeof q);
			set_err(err, errlen, "scope \"%s\" is not in the tenant's allowed_scopes", q);
			return -1;
		}
		if (envelope_scope_repeats(d, i))
			continue;
		if (append_bytes(g, &used, " ", 1) != 0 || append_bytes(g, &used, s, len) != 0)
			goto overflow;
	}
	return 0;
overflow:
	set_err(err, errlen, "scope string too long");
	return -1;
}

static int apply_lifetime(const struct tenant *t, const struct decision *d, struct grant *g, char *err,
                          size_t errlen)
{
	long long life;

	if (d->expires_s < 0) {
		set_err(err, errlen, "policy returned a negative lifetime (%lld s)", d->expires_s);
		return -1;
	}
	life = d->expires_s > 0 ? d->expires_s : t->default_expires_s;
	if (t->max_expires_s <= 0) {
		set_err(err, errlen, "tenant has no valid max_expires_in");
		return -1;
	}
	if (life > t->max_expires_s) {
		life = t->max_expires_s;
		g->capped = true;
	}
	if (life <= 0) {
		set_err(err, errlen, "token lifetime must be positive (%lld s)", life);
		return -1;
	}
	if (duration_format(life, g->courier_expires, sizeof g->courier_expires) != 0) {
		set_err(err, errlen, "cannot write lifetime %lld s for Courier", life);
		return -1;
	}
	g->expires_s = life;
	return 0;
}

/* Every field empty: the strings are only ever read up to their NUL, so the
 * 8 KiB behind it need no zeroing. */
static void grant_clear(struct grant *g)
{
	g->scope[0] = '\0';
	g->expires_s = 0;
	g->capped = false;
	g->courier_expires[0] = '\0';
}

int envelope_apply(const struct tenant *t, const char *user_id, const struct decision *d, struct grant *g,
                   char *err, size_t errlen)
{
	size_t uid_len;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (g == NULL) {
		set_err(err, errlen, "no grant to fill");
		return -1;
	}
	grant_clear(g);
	if (t == NULL || d == NULL || user_id == NULL) {
		set_err(err, errlen, "missing tenant, decision or user id");
		return -1;
	}
	if (!d->allow) {
		set_err(err, errlen, "decision does not allow a token");
		return -1;
	}
	uid_len = strnlen(user_id, SCOPE_USER_ID_MAX + 1);
	if (!scope_user_id_valid(user_id, uid_len)) {
		set_err(err, errlen, "invalid user id");
		return -1;
	}
	if (d->n_scopes > DECISION_MAX_SCOPES) {
		set_err(err, errlen, "policy returned more than %d scopes", DECISION_MAX_SCOPES);
		return -1;
	}
	if (apply_scopes(t, user_id, uid_len, d, g, err, errlen) != 0 ||
	    apply_lifetime(t, d, g, err, errlen) != 0) {
		grant_clear(g);
		return -1;
	}
	return 0;
}
