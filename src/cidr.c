/*
 * cidr.c — IP networks: parsing and matching, for configuration and policies.
 *
 * Owns the one rule by which the broker reads a CIDR (cidr.h). It must never
 * accept what it cannot read exactly: no leading zeros in a prefix, no host
 * bits, no trailing bytes, no NUL inside the text.
 */
#include "cidr.h"

#include <arpa/inet.h>
#include <string.h>

int cidr_addr_parse(const char *s, size_t len, unsigned char out[16])
{
	char text[INET6_ADDRSTRLEN + 1];
	struct in_addr a4;

	if (len == 0 || len >= sizeof(text) || memchr(s, '\0', len))
		return -1;
	memcpy(text, s, len);
	text[len] = '\0';
	if (inet_pton(AF_INET, text, &a4) == 1) {
		memset(out, 0, 10);
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &a4, 4);
		return 0;
	}
	return inet_pton(AF_INET6, text, out) == 1 ? 0 : -1;
}

static bool is_mapped_v4(const unsigned char a[16])
{
	static const unsigned char prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	return memcmp(a, prefix, sizeof(prefix)) == 0;
}

/* The decimal prefix in [s, s+len): digits only, no leading zero. */
static int parse_prefix(const char *s, size_t len, unsigned max, unsigned *out)
{
	unsigned v = 0;

	if (len == 0 || len > 3 || (s[0] == '0' && len > 1))
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

int cidr_parse(const char *s, size_t len, struct cidr *out)
{
	const char *slash;
	size_t alen;
	unsigned prefix;
	bool v4;

	if (len > CIDR_TEXT_MAX || memchr(s, '\0', len))
		return -1;
	slash = memchr(s, '/', len);
	alen = slash ? (size_t)(slash - s) : len;
	if (cidr_addr_parse(s, alen, out->addr))
		return -1;
	/* "::ffff:10.0.0.1" is written as IPv6: it stays an IPv6 network. */
	v4 = is_mapped_v4(out->addr) && memchr(s, ':', alen) == NULL;
	if (slash) {
		if (parse_prefix(slash + 1, len - alen - 1, v4 ? 32 : 128, &prefix))
			return -1;
	} else {
		prefix = v4 ? 32 : 128;
	}
	out->prefix = prefix + (v4 ? 96 : 0);
	for (unsigned bit = out->prefix; bit < 128; bit++)
		if (out->addr[bit / 8] & (0x80 >> (bit % 8)))
			return -1;
	return 0;
}

bool cidr_contains(const struct cidr *n, const unsigned char a[16])
{
	unsigned full = n->prefix / 8, rest = n->prefix % 8;

	if (memcmp(n->addr, a, full) != 0)
		return false;
	return rest == 0 || ((n->addr[full] ^ a[full]) & (unsigned char)(0xff << (8 - rest))) == 0;
}

bool cidr_match(const struct cidr *nets, size_t n, const char *ip)
{
	unsigned char a[16];

	if (!ip || cidr_addr_parse(ip, strlen(ip), a))
		return false;
	for (size_t i = 0; i < n; i++)
		if (cidr_contains(&nets[i], a))
			return true;
	return false;
}
