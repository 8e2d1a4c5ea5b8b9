/*
 * cidr.h — IP networks: one parser and one matcher for the whole broker.
 *
 * trusted_proxy.from and broker.cidr_match read CIDRs with this one rule:
 * a numeric IPv4 or IPv6 address, optionally "/prefix" in decimal without
 * leading zeros, no host bits set ("10.1.2.3/8" is most likely a typo).
 * IPv4 is held mapped into ::ffff:0:0/96: an IPv4 network matches only IPv4
 * addresses; an IPv6 network that covers ::ffff:0:0/96 matches them too.
 */
#ifndef CIDR_H
#define CIDR_H

#include <stdbool.h>
#include <stddef.h>

#define CIDR_TEXT_MAX 64 /* longest accepted text, "addr/prefix" */

struct cidr {
	unsigned char addr[16];
	unsigned prefix; /* 0..128, over the mapped form */
};

/* Parses the len bytes at s (no NUL needed; an embedded NUL is refused).
 * Returns 0, or -1 when s is not a network by the rule above. */
int cidr_parse(const char *s, size_t len, struct cidr *out);

/* Parses a numeric address (no prefix) into its 16-byte mapped form. */
int cidr_addr_parse(const char *s, size_t len, unsigned char out[16]);

/* Whether the address a (mapped form) lies in the network n. */
bool cidr_contains(const struct cidr *n, const unsigned char a[16]);

/* Whether the NUL-terminated address ip lies in any of the n networks
 * (false for an address that does not parse). */
bool cidr_match(const struct cidr *nets, size_t n, const char *ip);

#endif
