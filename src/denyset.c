/*
 * denyset.c — one deny file's users: an immutable, sorted set.
 *
 * Owns the parser of deny files (one user id a line, each valid as a
 * request's user_id; blank lines and "# " comments skipped) and the set it
 * builds, shared by reference. Used by the configuration (each tenant's
 * deny_users read at load) and by the kill switch (the lists in force). It
 * must never know a tenant or a configuration, never quote a file in a
 * message (a line number only), and never change a set once built.
 */
#include "denyset.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "scope.h"

struct denyset {
	atomic_int refs;
	size_t n;
	char **ids; /* sorted, unique; point into text */
	char *text;
};

static int id_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void set_free(struct denyset *s)
{
	free(s->ids);
	free(s->text);
	free(s);
}

static bool space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Splits s->text into ids (each line trimmed, NUL-terminated in place). */
static int split_lines(struct denyset *s, const char *name, size_t len, char *why, size_t whylen)
{
	size_t cap = 0, line = 0;
	char *p = s->text, *end = s->text + len;

	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p)), *a = p, *b = nl ? nl : end;
		line++;
		p = nl ? nl + 1 : end;
		while (a < b && space(*a))
			a++;
		while (b > a && space(b[-1]))
			b--;
		if (a == b || (*a == '#' && (b - a == 1 || space(a[1]))))
			continue;
		if (!scope_user_id_valid(a, (size_t)(b - a))) {
			snprintf(why, whylen,
			         "%s:%zu: not a valid user id (1-256 bytes of UTF-8, no whitespace or "
			         "control characters)",
			         name, line);
			return -1;
		}
		if (s->n == cap) {
			char **grown;
			if (cap >= DENYSET_MAX_USERS) {
				snprintf(why, whylen, "%s: more than %u user ids", name, DENYSET_MAX_USERS);
				return -1;
			}
			cap = cap ? cap * 2 : 64;
			if (!(grown = realloc(s->ids, cap * sizeof(*grown)))) {
				snprintf(why, whylen, "%s: out of memory", name);
				return -1;
			}
			s->ids = grown;
		}
		*b = '\0';
		s->ids[s->n++] = a;
	}
	return 0;
}

struct denyset *denyset_parse(const char *name, const char *text, size_t len, char *why, size_t whylen)
{
	struct denyset *s = calloc(1, sizeof(*s));
	size_t o = 0;

	if (!s || !(s->text = malloc(len + 1))) {
		snprintf(why, whylen, "%s: out of memory", name);
		goto fail;
	}
	memcpy(s->text, text, len);
	s->text[len] = '\0';
	if (split_lines(s, name, len, why, whylen) != 0)
		goto fail;
	if (s->n)
		qsort(s->ids, s->n, sizeof(*s->ids), id_cmp);
	for (size_t i = 0; i < s->n; i++)
		if (o == 0 || strcmp(s->ids[o - 1], s->ids[i]) != 0)
			s->ids[o++] = s->ids[i];
	s->n = o;
	atomic_init(&s->refs, 1);
	return s;
fail:
	if (s)
		set_free(s);
	return NULL;
}

struct denyset *denyset_load(const char *path, char *why, size_t whylen)
{
	struct denyset *s;
	char *text = NULL, reason[256];
	size_t len = 0;

	if (fileio_read(path, DENYSET_FILE_MAX, 0, &text, &len, reason, sizeof(reason)) != 0) {
		snprintf(why, whylen, "%s: %s", path, reason);
		return NULL;
	}
	s = denyset_parse(path, text, len, why, whylen);
	free(text);
	return s;
}

size_t denyset_size(const struct denyset *s)
{
	return s ? s->n : 0;
}

bool denyset_has(const struct denyset *s, const char *user_id)
{
	return s && s->n && bsearch(&user_id, s->ids, s->n, sizeof(*s->ids), id_cmp);
}

void denyset_ref(struct denyset *s)
{
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void denyset_unref(struct denyset *s)
{
	if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
		set_free(s);
}

bool denyset_equal(const struct denyset *a, const struct denyset *b)
{
	if (denyset_size(a) != denyset_size(b))
		return false;
	for (size_t i = 0; i < denyset_size(a); i++)
		if (strcmp(a->ids[i], b->ids[i]) != 0)
			return false;
	return true;
}

const char *denyset_id(const struct denyset *s, size_t i)
{
	return s->ids[i];
}
