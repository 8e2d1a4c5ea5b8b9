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

/* fileio_read's flags (0: none). */
#define FILEIO_STDIN        1 /* "-" is standard input */
#define FILEIO_NOFOLLOW     2 /* a symbolic link as the last part of path is refused */
#define FILEIO_ABSENT_EMPTY 4 /* a file that does not exist reads as empty */

/* Reads the regular file at path (or standard input for "-" with
 * FILEIO_STDIN) into a NUL-terminated malloc'd buffer of at most max bytes.
 * 0, or -1 with why set (never quoting the file's content). */
int fileio_read(const char *path, size_t max, int flags, char **out, size_t *outlen, char *why,
                size_t whylen);

/* dir "/" name, or name when it is absolute or dir is NULL; malloc'd. */
char *fileio_join(const char *dir, const char *name);

/* The folder part of path ("." when none); malloc'd. */
char *fileio_dir(const char *path);

#endif
