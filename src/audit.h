/*
 * audit.h — the audit log: one JSON line per policy decision, in a file of
 * its own (audit_log in the configuration).
 *
 * Lines are appended with one write(2) each (O_APPEND), so lines from every
 * loop stay whole and a slow disk costs a loop one write of one line. The
 * file is reopened on SIGUSR1, for logrotate. Nothing secret may be passed
 * in: no credential header, no key, no token.
 */
#ifndef BROKER_AUDIT_H
#define BROKER_AUDIT_H

#include <stdbool.h>
#include <stddef.h>

/* Opens path for appending (created 0600), or closes the log when path is
 * NULL; inputs: whether lines carry the request as the policy saw it. The
 * same path keeps its open file. Returns 0, or -1 with the reason in err
 * (the log in force is kept). */
int audit_configure(const char *path, bool inputs, char *err, size_t errlen);

/* Whether path (NULL: no audit log) can be opened for appending, as a reload
 * checks before its generation serves. Returns 0, or -1 with the reason. */
int audit_check(const char *path, char *err, size_t errlen);

/* Whether a line should be written, and whether with its inputs. */
bool audit_enabled(void);
bool audit_inputs(void);

/* Closes and opens the file again by its path (after logrotate renamed it). */
void audit_reopen(void);

/* Appends one line (len bytes, "\n" included) with one write(2). A failed
 * or short write is counted and logged (rate limited). */
void audit_write(const char *line, size_t len);

/* A line that could not even be built: counted and logged like a failed write. */
void audit_write_failed(const char *why);

/* Lines that could not be written since start (for /metrics). */
unsigned long long audit_failures(void);

/* Closes the file (at exit). */
void audit_close(void);

#endif
