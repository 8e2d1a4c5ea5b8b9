/*
 * webclient.c — GET /v1/client.js: the browser helper, from memory.
 *
 * Owns the helper's answer: the module embedded at build time
 * (src/web/client.js through scripts/embed.sh), its ETag and cache lifetime,
 * the revalidation (If-None-Match → 304) and the CORS headers that let any
 * page import it as a module. It must never read a file at run time, never
 * answer anything but the embedded bytes, and never carry a credential: the
 * module is public, so every origin may read it.
 */
#include "webclient.h"

#include <string.h>

#include "loop.h"
#include "reply.h"

/* How long a browser or CDN may use its copy before revalidating (cheap:
 * a 304 with the ETag). */
#define WEBCLIENT_CACHE_CONTROL "public, max-age=300"

bool webclient_route(const char *url)
{
	return strcmp(url, "/v1/client.js") == 0;
}

/* Whether an If-None-Match list ("*", or entity tags, weak or strong,
 * separated by commas) names the module's ETag (weak comparison, RFC 9110
 * §13.1.2). */
static bool etag_matches(const char *list)
{
	size_t elen = strlen(webclient_js_etag);
	const char *p = list;

	while (p && *p) {
		p += strspn(p, " \t,");
		if (*p == '*')
			return true;
		if (strncmp(p, "W/", 2) == 0)
			p += 2;
		if (strncmp(p, webclient_js_etag, elen) == 0 && (p[elen] == '\0' || strchr(" \t,", p[elen])))
			return true;
		p = strchr(p, ',');
	}
	return false;
}

enum MHD_Result webclient_serve(struct MHD_Connection *conn, struct http_server *s)
{
	const char *inm = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
	bool fresh = inm && etag_matches(inm);
	struct MHD_Response *resp;
	char id[REPLY_REQUEST_ID_MAX + 1];
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(fresh ? 0 : webclient_js_len, (void *)webclient_js,
	                                       MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	reply_request_id(conn, id);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/javascript; charset=utf-8");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, webclient_js_etag);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, WEBCLIENT_CACHE_CONTROL);
	/* A module imported from another origin is fetched in CORS mode: public
	 * code, no credentials, readable by every page. */
	MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
	MHD_add_response_header(resp, "Cross-Origin-Resource-Policy", "cross-origin");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(resp, "X-Request-Id", id);
	if (s && loop_draining(s))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(conn, fresh ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}
