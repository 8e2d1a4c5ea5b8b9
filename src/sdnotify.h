/*
 * sdnotify.h — telling systemd (Type=notify) where serve stands, without
 * libsystemd: one datagram per state change to $NOTIFY_SOCKET.
 *
 * READY=1 once a generation serves, RELOADING=1 (with MONOTONIC_USEC) when a
 * reload starts and READY=1 again when its verdict is in (installed or
 * refused), STOPPING=1 when the drain begins. Without NOTIFY_SOCKET every call
 * does nothing. A message that cannot be sent is dropped: the supervisor's
 * timeouts cover it, and nothing on the request path ever waits for it.
 */
#ifndef BROKER_SDNOTIFY_H
#define BROKER_SDNOTIFY_H

/* Reads NOTIFY_SOCKET once, before any thread starts. Returns 0, or -1 when
 * it is set but not a usable address (an absolute path or "@abstract"). */
int sdnotify_init(void);

/* READY=1, with a STATUS= line naming the generation that serves. */
void sdnotify_ready(unsigned long long generation);

/* RELOADING=1 and MONOTONIC_USEC= (now, on CLOCK_MONOTONIC). */
void sdnotify_reloading(void);

/* STOPPING=1. */
void sdnotify_stopping(void);

#endif
