/*
 * replay.h — `courier-broker replay`: recorded decisions decided again.
 *
 * Reads audit-log lines (audit.c, written with audit_log.inputs = true: each
 * line holds the request as the policy saw it), decides each request again
 * with a configuration's policies (policyeval.c, the server's engine and
 * ceiling) and prints the decisions that differ. Never calls Courier and
 * never reads a secret: the configuration is loaded for its policies only.
 */
#ifndef BROKER_REPLAY_H
#define BROKER_REPLAY_H

#define REPLAY_USAGE "courier-broker replay -c CONFIG [--tenant NAME] [--format text|json] LOG..."

/* `courier-broker replay` with the arguments after "replay": 0 when no
 * decision differs, 1 when one does, 2 on a usage error, an unreadable log or
 * configuration, or lines that could not be decided again (no inputs, not
 * JSON, unknown tenant) while none differed. */
int replay_main(int argc, char **argv);

#endif
