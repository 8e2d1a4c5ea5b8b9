/*
 * ipcap.h — how many connections one client address holds
 * (max_connections_per_ip), counted by the acceptor and given back by the
 * event loops.
 */
#ifndef BROKER_IPCAP_H
#define BROKER_IPCAP_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct sockaddr_storage;

/* How many connections one client address holds. */
struct ipcap_count {
	unsigned char key[16]; /* IPv4 as ::ffff:a.b.c.d; IPv6 cut to its /64 */
	unsigned n;
	struct ipcap_count *next;
};

/* Shared by the acceptor (which counts up) and the loops (which count down
 * when MHD closes a connection): one lock, taken once per accept and close. */
struct ipcap {
	pthread_mutex_t lock;
	struct ipcap_count **buckets; /* NULL: no cap */
	size_t mask;
	unsigned cap;
	uint64_t seed;
};

/* Sets up the table for cap connections an address (0: no cap), sized for
 * max_connections. 0, or -1 when out of memory (then ipcap_free it). */
int ipcap_init(struct ipcap *t, unsigned cap, unsigned max_connections);

void ipcap_free(struct ipcap *t);

/* Counts one more connection from ss: its count, or NULL when the address
 * already holds cap (or memory ran out: refused too). */
struct ipcap_count *ipcap_take(struct ipcap *t, const struct sockaddr_storage *ss);

/* Gives a count back (NULL: nothing). */
void ipcap_release(struct ipcap *t, struct ipcap_count *c);

#endif
