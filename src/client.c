/*
 * client.c — the request deadlines of one loop's client connections.
 *
 * Owns the two deadline-ordered lists of a loop (requests arriving,
 * connections idle between requests) and their sweep. It must never do
 * per-byte work (a trickling client costs one list move per request), never
 * close a socket itself (the loop's cut shuts it down, and MHD closes it), and
 * never touch another loop's lists.
 */
#include "client.h"

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

#include "clock.h"

static struct client_list *phase_list(struct client_watch *w, enum client_phase ph)
{
	return ph == CLIENT_RECEIVING ? &w->receiving : ph == CLIENT_IDLE ? &w->idle : NULL;
}

void client_set_phase(struct client_watch *w, struct client *c, enum client_phase ph)
{
	struct client_list *l = phase_list(w, c->phase);
	long long delay_ms = ph == CLIENT_RECEIVING ? w->request_ms : w->idle_ms;

	if (l) {
		if (c->prev)
			c->prev->next = c->next;
		else
			l->head = c->next;
		if (c->next)
			c->next->prev = c->prev;
		else
			l->tail = c->prev;
	}
	c->prev = c->next = NULL;
	c->phase = ph;
	if (ph == CLIENT_NONE)
		return;
	l = ph == CLIENT_RECEIVING ? &w->receiving : &w->idle;
	c->deadline_ms = (long long)clock_ms() + delay_ms;
	c->prev = l->tail;
	if (l->tail)
		l->tail->next = c;
	else
		l->head = c;
	l->tail = c;
}

struct client *client_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? ci->socket_context : NULL;
}

/* Done receiving: suspended on Courier (its own deadline) or answered. */
static bool past_receiving(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci;

	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_SUSPENDED);
	if (ci && ci->suspended == MHD_YES)
		return true;
	return MHD_get_connection_info(conn, MHD_CONNECTION_INFO_HTTP_STATUS) != NULL;
}

long long client_sweep(struct client_watch *w, void (*cut)(void *ctx, struct client *c, const char *why),
                       void *ctx)
{
	struct client *c;
	long long now, next = -1;

	if (!w->receiving.head && !w->idle.head)
		return -1;
	now = (long long)clock_ms();
	while ((c = w->receiving.head) && c->deadline_ms <= now) {
		client_set_phase(w, c, CLIENT_NONE);
		if (!past_receiving(c->conn))
			cut(ctx, c, "its request did not arrive within request_timeout_ms");
	}
	while ((c = w->idle.head) && c->deadline_ms <= now) {
		client_set_phase(w, c, CLIENT_NONE);
		cut(ctx, c, "no request line within connection_timeout_s of the last request");
	}
	if (w->receiving.head)
		next = w->receiving.head->deadline_ms - now;
	if (w->idle.head && (next < 0 || w->idle.head->deadline_ms - now < next))
		next = w->idle.head->deadline_ms - now;
	return next;
}
