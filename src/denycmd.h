/*
 * denycmd.h — `courier-broker deny|allow -c CONFIG --tenant NAME USER_ID...`.
 */
#ifndef BROKER_DENYCMD_H
#define BROKER_DENYCMD_H

#define DENYCMD_USAGE                                                                                        \
	"courier-broker deny  -c CONFIG --tenant NAME USER_ID...\n"                                          \
	"       courier-broker allow -c CONFIG --tenant NAME USER_ID..."

/* Runs `deny` or `allow` (cmd) with the arguments after it; returns the
 * exit code: 0 done, 1 failed (said on stderr), 2 bad usage. */
int denycmd_main(const char *cmd, int argc, char **argv);

#endif
