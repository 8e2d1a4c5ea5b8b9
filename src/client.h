/*
 * client.h — a client connection's record, and the request deadlines of the
 * connections one event loop holds (client.c).
 */
#ifndef BROKER_CLIENT_H
#define BROKER_CLIENT_H

#include <sys/socket.h>

struct MHD_Connection;
struct ipcap_count;

/* Where a connection stands for the request deadline. */
enum client_phase {
	CLIENT_NONE,      /* not watched: answered, suspended, cut, or no deadline set */
	CLIENT_RECEIVING, /* a request is arriving: the first from accept, a later one from its request line
	                   */
	CLIENT_IDLE,      /* between requests: the next request line is due within the idle timeout */
};

/*
 * A client connection's record from accept to close. The acceptor fills it
 * and hands it to a loop (the `handed` list); the loop gives the socket to
 * its daemon, and keeps the record as MHD's socket context until MHD closes
 * the connection. While watched, it sits on its loop's list for its phase.
 */
struct client {
	int fd; /* MHD's once added: never closed here */
	socklen_t addrlen;
	struct sockaddr_storage addr;
	struct ipcap_count *ip; /* the count it holds, or NULL */
	struct MHD_Connection *conn;
	enum client_phase phase;
	long long deadline_ms;
	struct client *prev, *next; /* the handed list (next only), then its phase's list */
};

/* Each deadline on a list is "now + the list's fixed delay" when pushed, so
 * a list is in deadline order and the sweep looks at its head only. */
struct client_list {
	struct client *head, *tail;
};

/* One loop's watched connections (its thread's alone). */
struct client_watch {
	struct client_list receiving, idle; /* CLIENT_RECEIVING, CLIENT_IDLE */
	long long request_ms, idle_ms;      /* their delays; request_ms 0: no deadline */
};

/* Moves c to the tail of ph's list (none for CLIENT_NONE), due that list's
 * delay from now. */
void client_set_phase(struct client_watch *w, struct client *c, enum client_phase ph);

/* The record of an MHD connection (its socket context), or NULL. */
struct client *client_of(struct MHD_Connection *conn);

/* Unwatches the connections past their deadline and has cut close those
 * still receiving or idle; returns the milliseconds until the next deadline,
 * or -1 when none is watched. Looks at list heads only. */
long long client_sweep(struct client_watch *w, void (*cut)(void *ctx, struct client *c, const char *why),
                       void *ctx);

#endif
