/*
 * buf.h — the growable byte buffer, capped (curl's dynbuf is the model).
 *
 * Every buffer has a maximum length set at init: growing past it, or running
 * out of memory, frees the buffer and fails every later call, so a caller
 * checks once at the end or at each step, and never reads half a result.
 * The data is always NUL-terminated (the NUL is not counted in len).
 */
#ifndef BUF_H
#define BUF_H

#include <stddef.h>

struct buf {
	char *data; /* NULL until the first byte, and after a failure */
	size_t len; /* bytes held, without the terminating NUL */
	size_t cap; /* bytes allocated */
	size_t max; /* len never exceeds this */
	int failed; /* set by the first failure; every later call fails */
};

void buf_init(struct buf *b, size_t max);

/* Appends n bytes. 0, or -1 past the cap or out of memory (buffer freed). */
int buf_add(struct buf *b, const void *p, size_t n);

/* Appends printf-style text. 0 or -1 as buf_add. */
int buf_addf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Empties the buffer, keeping its memory (and its failure, if any). */
void buf_reset(struct buf *b);

/* Hands the data over (the caller frees it; "" when empty) and leaves the
 * buffer empty; NULL after a failure or when out of memory. */
char *buf_take(struct buf *b, size_t *len);

/* Frees the data; the buffer may be used again (empty, not failed). */
void buf_free(struct buf *b);

#endif
