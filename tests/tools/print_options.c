/*
 * print-options: prints the option table of docs/configuration.md from the
 * code's own table (config_print_options), for `make docs-check`.
 *
 * Owns nothing but its main. It must never load a configuration, read a
 * secret or touch the network: it prints, and exits.
 */
#include <stdio.h>

#include "config.h"

int main(void)
{
	config_print_options();
	return fflush(stdout) == 0 ? 0 : 1;
}
