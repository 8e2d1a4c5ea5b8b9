/*
 * fuzz_cidr.c — libFuzzer driver for src/cidr.c.
 *
 * Owns the properties of the one CIDR rule: an accepted network has no host
 * bits, a prefix within 0..128, contains its own address, and reads back the
 * same from inet_ntop's text of its address; matching never reads past the
 * input. Must never write outside its own buffers.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cidr n, again;
	char text[INET6_ADDRSTRLEN + 8], ip[INET6_ADDRSTRLEN];
	bool v4;

	if (cidr_parse((const char *)data, size, &n) != 0)
		return 0;
	if (n.prefix > 128)
		abort();
	for (unsigned bit = n.prefix; bit < 128; bit++)
		if (n.addr[bit / 8] & (0x80 >> (bit % 8)))
			abort();
	if (!cidr_contains(&n, n.addr))
		abort();
	v4 = memchr(data, ':', size) == NULL;
	if (v4 ? !inet_ntop(AF_INET, n.addr + 12, ip, sizeof(ip))
	       : !inet_ntop(AF_INET6, n.addr, ip, sizeof(ip)))
		abort();
	snprintf(text, sizeof(text), "%s/%u", ip, n.prefix - (v4 ? 96 : 0));
	if (cidr_parse(text, strlen(text), &again) != 0 || memcmp(&again, &n, sizeof(n)) != 0)
		abort();
	if (!cidr_match(&n, 1, ip))
		abort();
	return 0;
}
