/*
 * token.h — the token routes' pipeline (token.c), as the front's router
 * calls it: token_begin on MHD's first call for a token route,
 * token_continue on every later one, token_end when MHD is done.
 */
#ifndef BROKER_TOKEN_H
#define BROKER_TOKEN_H

#include <microhttpd.h>
#include <stddef.h>

struct loop;
struct req;

/* The first call: everything that can be decided from the headers (tenant,
 * CORS, method, media type, size). Sets *con_cls to the request's record.
 * flaw: why the request must be refused (request framing), or NULL. */
enum MHD_Result token_begin(struct loop *lp, struct MHD_Connection *conn, const char *tenant,
                            const char *method, const char *flaw, void **con_cls);

/* Every later call: the body, then the decision and the Courier call, then
 * (once Courier is done) the answer. */
enum MHD_Result token_continue(struct req *r, const char *upload_data, size_t *upload_data_size);

/* MHD is done with the request: counts a client that left, frees it all. */
void token_end(struct req *r);

/* The per-loop scratch the pipeline needs (struct loop_routes.scratch_size). */
size_t token_scratch_size(void);

#endif
