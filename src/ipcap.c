/*
 * ipcap.c — per-address connection counts (max_connections_per_ip).
 *
 * Owns the table of counts: an IPv4 address counts alone, an IPv6 address by
 * its /64. It must never let chosen addresses pile into one chain (the hash
 * is keyed with a random seed), and never hold a count of zero.
 */
#include "ipcap.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

static void ip_key(const struct sockaddr_storage *ss, unsigned char key[16])
{
	memset(key, 0, 16);
	if (ss->ss_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &((const struct sockaddr_in *)(const void *)ss)->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		/* A /64 is one subscriber's block: counting its addresses one by
		 * one would let a single host hold the whole server. */
		memcpy(key, &((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr, 8);
	}
}

/* Keyed with a random seed, so chosen addresses cannot pile into one chain. */
static size_t ip_hash(const struct ipcap *t, const unsigned char key[16])
{
	uint64_t a, b, h;

	memcpy(&a, key, 8);
	memcpy(&b, key + 8, 8);
	h = (a ^ t->seed) * 0x9E3779B97F4A7C15ull;
	h ^= h >> 29;
	h = (h + b) * 0xBF58476D1CE4E5B9ull;
	h ^= h >> 32;
	return (size_t)h & t->mask;
}

int ipcap_init(struct ipcap *t, unsigned cap, unsigned max_connections)
{
	size_t n = 64;

	pthread_mutex_init(&t->lock, NULL);
	t->cap = cap;
	if (!cap)
		return 0;
	while (n < max_connections)
		n *= 2;
	t->buckets = calloc(n, sizeof(*t->buckets));
	if (!t->buckets)
		return -1;
	t->mask = n - 1;
	if (getrandom(&t->seed, sizeof(t->seed), GRND_NONBLOCK) != (ssize_t)sizeof(t->seed))
		t->seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)t;
	return 0;
}

void ipcap_free(struct ipcap *t)
{
	for (size_t i = 0; t->buckets && i <= t->mask; i++) {
		while (t->buckets[i]) {
			struct ipcap_count *c = t->buckets[i];
			t->buckets[i] = c->next;
			free(c);
		}
	}
	free(t->buckets);
	t->buckets = NULL;
	pthread_mutex_destroy(&t->lock);
}

/* Counts one more connection from ss: its count, or NULL when the address
 * already holds cap (or memory ran out: refused too). */
struct ipcap_count *ipcap_take(struct ipcap *t, const struct sockaddr_storage *ss)
{
	unsigned char key[16];
	struct ipcap_count *c;
	size_t b;

	ip_key(ss, key);
	b = ip_hash(t, key);
	pthread_mutex_lock(&t->lock);
	for (c = t->buckets[b]; c && memcmp(c->key, key, 16) != 0; c = c->next)
		;
	if (!c && (c = calloc(1, sizeof(*c)))) {
		memcpy(c->key, key, 16);
		c->next = t->buckets[b];
		t->buckets[b] = c;
	}
	if (c && c->n >= t->cap)
		c = NULL;
	else if (c)
		c->n++;
	pthread_mutex_unlock(&t->lock);
	return c;
}

void ipcap_release(struct ipcap *t, struct ipcap_count *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&t->lock);
	if (--c->n == 0) {
		struct ipcap_count **pp = &t->buckets[ip_hash(t, c->key)];
		while (*pp != c)
			pp = &(*pp)->next;
		*pp = c->next;
		free(c);
	}
	pthread_mutex_unlock(&t->lock);
}
