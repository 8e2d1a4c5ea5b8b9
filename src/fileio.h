/*
 * fileio.h — reading whole files, bounded; paths relative to a folder.
 *
 * One reader for the configuration, policies, modules, data, test files,
 * JWKS files and `eval` requests. (Secret files keep their own reader in
 * secret.c: it reads into memory it can zero.)
 */
#ifndef FILEIO_H
#define FILEIO_H

#include <stddef.h>

/* Reads the regular file at path (or standard input for "-" when
 * allow_stdin) into a NUL-terminated malloc'd buffer of at most max bytes.
 * 0, or -1 with why set (never quoting the file's content). */
int fileio_read(const char *path, size_t max, int allow_stdin, char **out, size_t *outlen, char *why,
                size_t whylen);

/* dir "/" name, or name when it is absolute or dir is NULL; malloc'd. */
char *fileio_join(const char *dir, const char *name);

/* The folder part of path ("." when none); malloc'd. */
char *fileio_dir(const char *path);

#endif
