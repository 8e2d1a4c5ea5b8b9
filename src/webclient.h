/*
 * webclient.h — GET /v1/client.js: the browser helper, embedded at build time.
 *
 * The module's bytes, length and ETag are generated from src/web/client.js by
 * scripts/embed.sh (the Makefile's $(BUILD)/gen/web_client_js.c).
 */
#ifndef BROKER_WEBCLIENT_H
#define BROKER_WEBCLIENT_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

struct http_server;

/* The generated module: webclient_js_len bytes (NUL after them), and its
 * strong ETag, "\"sha256-<hex>\"". */
extern const unsigned char webclient_js[];
extern const size_t webclient_js_len;
extern const char webclient_js_etag[];

/* Whether url is the helper's route. */
bool webclient_route(const char *url);

/* Answers a GET or HEAD of the helper: 200 with the module, or 304 when
 * If-None-Match names its ETag. */
enum MHD_Result webclient_serve(struct MHD_Connection *conn, struct http_server *s);

#endif
