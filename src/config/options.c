/*
 * options.c — the table of every configuration option, and what reads it by name.
 *
 * Owns `config_options`: each option's dotted name, type, default, bounds,
 * where it is stored and what it means; the lookup of a row by name, the
 * "did you mean" hint, and the Markdown the docs are printed from
 * (config_print_options). It must never hold a second description of an
 * option anywhere else (docs/configuration.md is generated from it), and
 * never read a configuration file itself.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "loader.h"

const struct option config_options[] = {
    {"listen", OPT_STRING, "127.0.0.1:8080", 0, 0, NOWHERE, 0, config_conv_listen,
     "Address to listen on: `host:port`, or `[ipv6]:port`; port 0 picks a free port (logged at start)."},
    {"threads", OPT_INT, "2", 1, 64, CFG(threads), 0, NULL,
     "Event loops, one thread each; a request is served start to end (HTTP, policy, Courier call) by one "
     "loop."},
    {"connection_timeout_s", OPT_INT, "30", 1, 3600, CFG(connection_timeout_s), 0, NULL,
     "Idle client connections are closed after this many seconds."},
    {"max_body_bytes", OPT_INT, "16384", 256, 1048576, CFG(max_body_bytes), 0, NULL,
     "Largest request body; larger ones get 413."},
    {"max_connections", OPT_INT, "4096", 1, 100000, CFG(max_connections), 0, NULL,
     "Client connections held at once, split evenly among the loops."},
    {"max_inflight", OPT_INT, "4096", 1, 100000, CFG(max_inflight), 0, NULL,
     "Courier calls in flight before new requests get 503."},
    {"drain_timeout_ms", OPT_INT, "10000", 0, 600000, CFG(drain_timeout_ms), 0, NULL,
     "On SIGTERM, how long to wait for in-flight requests."},
    {"reload_timeout_ms", OPT_INT, "30000", 100, 600000, CFG(reload_timeout_ms), 0, NULL,
     "On SIGHUP, how long a reload may take (loading, checking, compiling); one that takes longer is "
     "refused and the running generation keeps serving. The serving generation's value applies."},
    {"max_connections_per_ip", OPT_INT, "`max_connections` / 4", 0, 100000, NOWHERE, OPT_PROSE_DEFAULT,
     config_conv_per_ip,
     "Client connections one IPv4 address (or IPv6 /64) may hold at once; more are closed at accept. 0: no "
     "cap. Behind a proxy, raise it above the proxy's connections or set 0."},
    {"request_timeout_ms", OPT_INT, "10000", 0, 600000, CFG(request_timeout_ms), 0, NULL,
     "A request's line, headers and body must arrive within this, counted from the connection's accept "
     "(first request) or the request line (later ones), however slowly they trickle; else the connection "
     "is closed. 0: no deadline."},
    {"admin_listen", OPT_STRING, NULL, 0, 0, NOWHERE, 0, config_conv_admin_listen,
     "Second address serving only `/healthz`, `/readyz` and `/metrics`, on its own thread and connection "
     "budget, so client floods cannot starve probes. Absent: none (the probes stay on `listen` either "
     "way)."},
    {"tls", OPT_TABLE, NULL, 0, 0, CFG(tls.enabled), OPT_PRESENCE, NULL,
     "HTTPS on `listen` (TLS 1.2 and 1.3, ECDHE, AEAD ciphers only): "
     "`{ cert = \"PATH\", key = { file = \"PATH\" } }`. Both are read and checked (the key must be the "
     "certificate's, the certificate unexpired) at every load; a reload with a new pair serves it to new "
     "connections, a bad pair refuses the reload. Absent: plain HTTP. `admin_listen` stays plain HTTP."},
    {"tls.cert", OPT_STRING, NULL, 0, 0, NOWHERE, OPT_REQUIRED, config_conv_tls_cert,
     "PEM certificate, then its intermediates, relative to the config file's folder; not a secret (a file "
     "that also holds the private key is refused: the key goes in `key`)."},
    {"tls.key", OPT_SECRET, NULL, 0, 0, NOWHERE, OPT_REQUIRED, config_conv_tls_key,
     "The certificate's private key, unencrypted PEM: `{ file = \"PATH\" }` (owner-only mode) or "
     "`{ env = \"NAME\" }`."},

    {"log_level", OPT_STRING, "info", 0, 0, NOWHERE, 0, config_conv_log_level,
     "Lowest level logged: `debug`, `info`, `warn` or `error` (answers with a 5xx status log at `error`, "
     "other token requests at `info`). Applied again on reload."},
    {"audit_log", OPT_TABLE, NULL, 0, 0, NOWHERE, 0, NULL,
     "One JSON line per policy decision, apart from the main log (docs/operations.md)."},
    {"audit_log.file", OPT_STRING, NULL, 0, 0, NOWHERE, 0, config_conv_audit_file,
     "File the audit lines are appended to, relative to the config file's folder; reopened on SIGUSR1 (for "
     "logrotate). Absent: no audit log."},
    {"audit_log.inputs", OPT_BOOL, "false", 0, 0, CFG(audit_inputs), 0, NULL,
     "Also write the request as the policy saw it (body, identity, client, headers; never a credential): "
     "what `replay` needs."},

    {"courier", OPT_TABLE, NULL, 0, 0, NOWHERE, 0, NULL, "How to reach Courier."},
    {"courier.region", OPT_STRING, "`\"us\"`", 0, 0, NOWHERE, OPT_PROSE_DEFAULT, config_conv_region,
     "Courier's region: `\"us\"` (https://api.courier.com) or `\"eu\"` (https://api.eu.courier.com); "
     "give this or `base_url`, not both."},
    {"courier.base_url", OPT_STRING, "per `region`", 0, 0, NOWHERE, OPT_PROSE_DEFAULT, config_conv_base_url,
     "Courier API base URL (`https://`; `http://` only to 127.0.0.1, [::1] or localhost; no user name or "
     "password); env `COURIER_BASE_URL` "
     "overrides it (and `region`)."},
    {"courier.ca_file", OPT_STRING, NULL, 0, 0, NOWHERE, 0, config_conv_ca_file,
     "PEM file of CAs trusted for Courier (and an HTTPS proxy) in addition to the system's bundle: a private "
     "CA, a TLS-inspecting proxy; relative to the config file's folder, read at load and at each reload "
     "(missing "
     "or without a certificate: a config error)."},
    {"courier.timeout_ms", OPT_INT, "5000", 1, 60000, CFG(courier_timeout_ms), 0, NULL,
     "Whole Courier call, queueing and connecting included."},
    {"courier.connect_timeout_ms", OPT_INT, "2000", 1, 60000, CFG(courier_connect_timeout_ms), 0, NULL,
     "Connecting to Courier."},
    {"courier.max_connections", OPT_INT, "1024", 1, 1024, CFG(courier_max_connections), 0, NULL,
     "Connections to Courier's host, split evenly among the loops (at least one each)."},
    {"courier.retries", OPT_INT, "2", 0, 10, CFG(courier_retries), 0, NULL,
     "Retries of a failed Courier call (connection errors, 408, 409, 429, 5xx; never other 4xx), with "
     "exponential backoff and jitter or the answer's `Retry-After` / `retry-after-ms`, all within "
     "`courier.timeout_ms`."},
    {"courier.retry_budget_percent", OPT_INT, "10", 0, 100, CFG(courier_retry_budget_percent), 0, NULL,
     "Beyond `courier.retries` (when not 0), a call may retry up to 3 more times within `courier.timeout_ms` "
     "on a retry budget each loop keeps: every call Courier answered adds this percentage of a retry (up "
     "to 20 saved), every extra retry spends one. Sporadic failures get their extra tries; an outage earns "
     "none. 0: never more than `courier.retries`."},
    {"courier.breaker_failures", OPT_INT, "5", 0, 1000, CFG(courier_breaker_failures), 0, NULL,
     "Consecutive failed Courier calls (retries included: connection errors, timeouts, 408, 409, 429, "
     "5xx) to one endpoint with one key that open its circuit breaker: requests then get 503 "
     "`upstream_unavailable` at once. 0: no "
     "breaker."},
    {"courier.breaker_cooldown_ms", OPT_INT, "5000", 100, 600000, CFG(courier_breaker_cooldown_ms), 0, NULL,
     "How long an open breaker pauses calls before one probe call is let through; doubles after each "
     "failed probe, up to 60 s."},

    {"policy_limits", OPT_TABLE, NULL, 0, 0, NOWHERE, 0, NULL, "Budget of one policy decision."},
    {"policy_limits.max_instructions", OPT_INT, NUMBER(POLICY_DEFAULT_MAX_INSTRUCTIONS), 1000, 100000000,
     CFG(policy_max_instructions), 0, NULL,
     "Lua instructions per decision; work inside library functions (pattern matching steps, elements "
     "and bytes handled) is charged to it too. Breach: `policy_error`, even under `pcall`."},
    {"policy_limits.max_memory_bytes", OPT_INT, NUMBER(POLICY_DEFAULT_MAX_MEMORY_BYTES), 65536, 268435456,
     CFG(policy_max_memory_bytes), 0, NULL,
     "Lua memory a decision may add to its engine; `string.rep`/`string.format` results are capped at "
     "1 MiB besides."},
    {"policy_limits.timeout_ms", OPT_INT, NUMBER(POLICY_DEFAULT_TIMEOUT_MS), 1, 5000, CFG(policy_timeout_ms),
     0, NULL,
     "CPU time of one decision (checked every 1000 instructions, every 4096 units of charged library work "
     "and at every allocation of 64 KiB or more)."},

    {"tenants", OPT_MAP, NULL, 0, 0, NOWHERE, OPT_REQUIRED, NULL,
     "At least one tenant and at most 1000; names match `[A-Za-z0-9_-]{1,64}`; `default` serves `POST "
     "/v1/token`."},
    {"tenants.*", OPT_TABLE, NULL, 0, 0, NOWHERE, 0, NULL, "One tenant, keyed by its name."},
    {"tenants.*.api_key", OPT_SECRET, NULL, 0, 0, TEN(api_key), OPT_REQUIRED, NULL,
     "Courier API key of this tenant's workspace and environment."},
    {"tenants.*.policy", OPT_STRING, NULL, 0, 0, NOWHERE, OPT_REQUIRED, config_conv_policy,
     "Policy file (Lua), relative to the config file's folder."},
    {"tenants.*.data", OPT_STRING, NULL, 0, 0, NOWHERE, 0, config_conv_data,
     "JSON document the policy reads as `broker.data` (read-only), relative to the config file's folder; "
     "at most 1 MiB, part of the policy revision."},
    {"tenants.*.auth", OPT_TABLE, NULL, 0, 0, NOWHERE, 0, NULL,
     "How requesters authenticate: at least one of `jwt`, `client_keys`, `trusted_proxy`, `none = true`; "
     "tried in that order, the first that authenticates wins, a credential present but invalid is a 401."},
    {"tenants.*.auth.jwt", OPT_TABLE, NULL, 0, 0, TEN(auth.jwt.enabled), OPT_PRESENCE, NULL,
     "Requester presents a JWT from the app (`Authorization: Bearer`)."},
    {"tenants.*.auth.jwt.algorithms", OPT_LIST, NULL, 0, 0, NOWHERE, OPT_REQUIRED, config_conv_algorithms,
     "Allowed algorithms: `HS256`, `HS384`, `HS512` (with `hmac_secret`), `RS256`, `RS384`, `RS512`, "
     "`PS256`, "
     "`PS384`, `PS512` (RSA key), `ES256` (EC P-256 key), `ES384` (EC P-384 key), `EdDSA` or its RFC 9864 "
     "name `Ed25519` (Ed25519 key; either name admits tokens and JWKs that use the other)."},
    {"tenants.*.auth.jwt.hmac_secret", OPT_SECRET, NULL, 0, 0, TEN(auth.jwt.hmac_secret), 0, NULL,
     "Key for HS* algorithms (required with them; refused without them)."},
    {"tenants.*.auth.jwt.public_key", OPT_TABLE, NULL, 0, 0, TEN(auth.jwt.public_key_given), OPT_PRESENCE,
     NULL,
     "`{ file = \"PATH\" }`: one PEM public key (`-----BEGIN PUBLIC KEY-----`) for RS*/PS* (RSA, 2048..8192 "
     "bits), ES256 (P-256), ES384 (P-384) or EdDSA (Ed25519); not a secret, so any file mode is fine."},
    {"tenants.*.auth.jwt.public_key.file", OPT_STRING, NULL, 0, 0, NOWHERE, OPT_REQUIRED,
     config_conv_public_key, "PEM file, relative to the config file's folder."},
    {"tenants.*.auth.jwt.jwks", OPT_TABLE, NULL, 0, 0, TEN(auth.jwt.jwks_opts.enabled), OPT_PRESENCE, NULL,
     "A JSON Web Key Set: `{ file = \"PATH\" }` or `{ url = \"https://...\" }`; keys chosen by the token's "
     "`kid` and `alg`, never from `jku`/`x5u`/`x5c`/`jwk`."},
    {"tenants.*.auth.jwt.jwks.file", OPT_STRING, NULL, 0, 0, NOWHERE, 0, config_conv_jwks_file,
     "JWKS file, relative to the config file's folder; read at load and at each reload."},
    {"tenants.*.auth.jwt.jwks.url", OPT_STRING, NULL, 0, 0, TEN(auth.jwt.jwks_opts.url), 0, NULL,
     "JWKS URL (`https://`; `http://` only to 127.0.0.1, [::1] or localhost; no user name or password): "
     "fetched before the tenant is "
     "ready (a failed first fetch fails `check` and start), then refreshed in the background."},
    {"tenants.*.auth.jwt.jwks.ca_file", OPT_STRING, NULL, 0, 0, NOWHERE, 0, config_conv_jwks_ca_file,
     "With `url`: PEM file of CAs trusted for it in addition to the system's bundle, relative to the config "
     "file's folder."},
    {"tenants.*.auth.jwt.jwks.min_refresh_s", OPT_INT, "60", 1, 86400, TEN(auth.jwt.jwks_opts.min_refresh_s),
     0, NULL,
     "Shortest time between scheduled fetches (lower bound on `Cache-Control: max-age`; retry delay "
     "after a failed fetch)."},
    {"tenants.*.auth.jwt.jwks.max_cache_s", OPT_INT, "3600", 1, 604800, TEN(auth.jwt.jwks_opts.max_cache_s),
     0, NULL,
     "Longest a fetched set is used before it is fetched again (upper bound on `max-age`; used when "
     "the response has none)."},
    {"tenants.*.auth.jwt.jwks.cooldown_s", OPT_INT, "30", 1, 3600, TEN(auth.jwt.jwks_opts.cooldown_s), 0,
     NULL,
     "A token with an unknown `kid` is refused and triggers one fetch, at most once per this many seconds "
     "since the last fetch; concurrent misses share it."},
    {"tenants.*.auth.jwt.jwks.timeout_ms", OPT_INT, "5000", 100, 60000, TEN(auth.jwt.jwks_opts.timeout_ms), 0,
     NULL, "One JWKS fetch, connecting included."},
    {"tenants.*.auth.jwt.issuer", OPT_STRING, NULL, 0, 0, TEN(auth.jwt.rules.issuer), 0, NULL,
     "Expected `iss` claim, compared exactly; not checked when absent."},
    {"tenants.*.auth.jwt.audience", OPT_STRING, NULL, 0, 0, TEN(auth.jwt.rules.audience), 0, NULL,
     "Expected `aud` (the claim may be a list), compared exactly; not checked when absent."},
    {"tenants.*.auth.jwt.leeway_s", OPT_INT, "30", 0, 600, TEN(auth.jwt.rules.leeway_s), 0, NULL,
     "Clock skew allowed on `exp` and `nbf`, in seconds."},
    {"tenants.*.auth.jwt.max_token_bytes", OPT_INT, "8192", 256, 65536, TEN(auth.jwt.rules.max_token_bytes),
     0, NULL, "Longer tokens are refused unread."},
    {"tenants.*.auth.jwt.subject_claim", OPT_STRING, "sub", 0, 0, TEN(auth.jwt.rules.subject_claim), 0, NULL,
     "Claim that names the requester (`req.identity.subject`)."},
    {"tenants.*.auth.jwt.max_age_s", OPT_INT, NULL, 1, 31536000, TEN(auth.jwt.rules.max_age_s), 0, NULL,
     "When set, `iat` is required and may be at most this many seconds old (plus `leeway_s`)."},
    {"tenants.*.auth.jwt.typ", OPT_STRING, NULL, 0, 0, TEN(auth.jwt.rules.typ), 0, NULL,
     "When set, the header's `typ` must equal it (case-insensitive, `application/` optional), e.g. "
     "`\"JWT\"`."},
    {"tenants.*.auth.client_keys", OPT_TABLE_LIST, NULL, 0, 0, NOWHERE, 0, config_conv_client_keys,
     "Server-to-server bearer keys: `{ { name = \"billing-backend\", key = { env = \"BILLING_KEY\" } }, ... "
     "}`; "
     "the bearer is compared in constant time with every key; `identity.subject` is the name. With `jwt` "
     "beside it, a bearer with two dots goes to `jwt`, any other to `client_keys`."},
    {"tenants.*.auth.trusted_proxy", OPT_TABLE, NULL, 0, 0, TEN(auth.proxy.enabled), OPT_PRESENCE, NULL,
     "An authenticating proxy in front: its identity header is honoured only from `from`; it also makes "
     "`req.client.ip` the right-most `X-Forwarded-For` entry that is not a trusted proxy."},
    {"tenants.*.auth.trusted_proxy.header", OPT_STRING, NULL, 0, 0, NOWHERE, OPT_REQUIRED,
     config_conv_proxy_header,
     "Header naming the user, e.g. `\"X-Forwarded-User\"` (1..256 bytes, no control characters)."},
    {"tenants.*.auth.trusted_proxy.from", OPT_LIST, NULL, 0, 0, NOWHERE, OPT_REQUIRED, config_conv_proxy_from,
     "CIDRs of the proxies, e.g. `{ \"10.0.0.0/8\", \"::1/128\" }`; no default: the header is ignored from "
     "anyone else."},
    {"tenants.*.auth.none", OPT_BOOL, "false", 0, 0, TEN(auth.none), 0, NULL,
     "Development only: unauthenticated requesters reach the policy."},
    {"tenants.*.courier", OPT_TABLE, NULL, 0, 0, NOWHERE, 0, NULL,
     "This tenant's Courier upstream, `{ region = \"eu\" }` or `{ base_url = \"https://...\" }`; absent: the "
     "global one. `COURIER_BASE_URL` does not override it."},
    {"tenants.*.courier.region", OPT_STRING, NULL, 0, 0, NOWHERE, 0, config_conv_tenant_region,
     "`\"us\"` or `\"eu\"`, as `courier.region`."},
    {"tenants.*.courier.base_url", OPT_STRING, NULL, 0, 0, NOWHERE, 0, config_conv_tenant_base_url,
     "As `courier.base_url` (same rules); give this or `region`, not both."},
    {"tenants.*.max_expires_in", OPT_DURATION, "7d", 0, 0, TEN(max_expires_s), 0, NULL,
     "Ceiling on any token's lifetime."},
    {"tenants.*.default_expires_in", OPT_DURATION, "1h", 0, 0, TEN(default_expires_s), 0, NULL,
     "Lifetime when the policy's decision gives none; at most `max_expires_in`."},
    {"tenants.*.allowed_scopes", OPT_LIST, "the push tier", 0, 0, NOWHERE, OPT_PROSE_DEFAULT,
     config_conv_scopes, "Ceiling on the scopes of any token (`user_id:` scopes are added by the broker)."},
    {"tenants.*.cors_origins", OPT_LIST, NULL, 0, 0, NOWHERE, 0, config_conv_cors,
     "Browser origins allowed to call this tenant's token route (`https://app.example.com`, exact match; "
     "no `*`): they get CORS headers and preflight answers."},
    {"tenants.*.token_cache", OPT_BOOL, "false", 0, 0, TEN(token_cache), 0, NULL,
     "Reuse a token for an identical grant (user, scopes, lifetime) while at least half its lifetime "
     "remains; the policy still decides every request."},
    {"tenants.*.enabled", OPT_BOOL, "true", 0, 0, TEN(enabled), 0, NULL,
     "`false`: every token request of this tenant gets 403 `tenant_disabled` (after its credential is "
     "checked) without running the policy, and its cached tokens are dropped; the kill switch for a "
     "whole tenant. Applied on reload."},
    {"tenants.*.deny_users", OPT_TABLE, NULL, 0, 0, TEN(deny_given), OPT_PRESENCE, NULL,
     "Users who get no token whatever the policy says (403 `user_denied`, checked before the policy "
     "runs): `{ file = \"PATH\" }`."},
    {"tenants.*.deny_users.file", OPT_STRING, NULL, 0, 0, NOWHERE, OPT_REQUIRED, config_conv_deny_file,
     "One user id a line (valid as a request's `user_id`; blank lines and `# ...` comments ignored), "
     "relative to the config file's folder. Read at every load (missing, unreadable or invalid: the "
     "load fails) and again within a second of changing (its folder is watched); a later read that "
     "fails keeps the last list and logs why. A folder deleted and made again (a deployment) is "
     "watched for every second and its file read when it is back. Newly listed users' cached tokens are "
     "dropped."},
    {"tenants.*.shadow_policy", OPT_STRING, NULL, 0, 0, NOWHERE, 0, config_conv_shadow_policy,
     "A candidate policy file decided beside `policy` on every request, never enforced: on its own thread "
     "and budget after the live decision, so it can neither slow nor fail a request; differences are "
     "logged (`shadow_diff`) and counted. Compiled, and tested when a `_test.lua` is beside it, at every "
     "load like `policy`: a shadow that fails fails the load. Relative to the config file's folder."},
    {"tenants.*.rate_limit", OPT_TABLE, NULL, 0, 0, NOWHERE, 0, NULL, "Token issuance per tenant."},
    {"tenants.*.rate_limit.per_second", OPT_NUMBER, "0", 0, 1e6, TEN(rate_limit.per_second), 0, NULL,
     "Sustained rate; 0 turns the limit off."},
    {"tenants.*.rate_limit.burst", OPT_NUMBER, "per_second", 0, 1e6, NOWHERE, OPT_PROSE_DEFAULT,
     config_conv_burst,
     "Bucket size; at least 1 when `per_second` > 0; refused without `per_second` (it would do nothing)."},
    {"tenants.*.rate_limit.per_requester", OPT_TABLE, NULL, 0, 0, NOWHERE, 0, NULL,
     "Token issuance per requester of the tenant: the authenticated subject (JWT `sub`, proxy user), the "
     "client key's name, or the client IP when the request is unauthenticated or has no subject. Taken "
     "before the tenant's bucket, so one requester's refused requests never spend it."},
    {"tenants.*.rate_limit.per_requester.per_second", OPT_NUMBER, "0", 0, 1e6,
     TEN(rate_limit.per_requester.per_second), 0, NULL, "Sustained rate per requester; 0 turns it off."},
    {"tenants.*.rate_limit.per_requester.burst", OPT_NUMBER, "per_second", 0, 1e6, NOWHERE, OPT_PROSE_DEFAULT,
     config_conv_requester_burst,
     "Bucket size per requester; at least 1 when `per_second` > 0; refused without `per_second`."},

    {"cluster", OPT_TABLE, NULL, 0, 0, CFG(cluster.enabled), OPT_PRESENCE, NULL,
     "Brokers that share one Redis act as one (docs/operations.md, \"Running a cluster\"): the "
     "`deny`/`allow` "
     "list reaches every broker, and rate limits (and, with `cache_key`, the token cache) are shared. "
     "Absent: the broker stands alone and never touches Redis. Read at start: "
     "a reload that changes it warns and keeps the cluster the broker started with until a restart."},
    {"cluster.redis", OPT_TABLE, NULL, 0, 0, NOWHERE, 0, NULL, "How to reach the cluster's Redis."},
    {"cluster.redis.url", OPT_STRING, NULL, 0, 0, NOWHERE, OPT_REQUIRED, config_conv_cluster_url,
     "`redis://[user@]host[:port][/db]` (port 6379 and database 0 by default; `user` for a Redis ACL "
     "user), or `rediss://...` for TLS (1.2 or later; the server's certificate verified against the "
     "system's CAs and `ca_file`, and its host name or IP address checked: there is no switch to turn "
     "that off). No password in it (`password`)."},
    {"cluster.redis.ca_file", OPT_STRING, NULL, 0, 0, NOWHERE, 0, config_conv_cluster_ca_file,
     "With `rediss://`: PEM file of CAs trusted for Redis in addition to the system's bundle (a private "
     "CA); relative to the config file's folder, read at load (missing or without a certificate: a "
     "config error; refused with `redis://`)."},
    {"cluster.redis.cert", OPT_STRING, NULL, 0, 0, NOWHERE, 0, config_conv_cluster_cert,
     "With `rediss://`: PEM client certificate (then its intermediates) the broker presents when Redis "
     "asks for one (`tls-auth-clients yes`, Redis's default with TLS); relative to the config file's "
     "folder; not a secret (a file that also holds the key is refused); its extended key usage, if any, "
     "must allow clientAuth. Requires `key`."},
    {"cluster.redis.key", OPT_SECRET, NULL, 0, 0, NOWHERE, 0, config_conv_cluster_key,
     "The client certificate's private key, unencrypted PEM: `{ file = \"PATH\" }` (owner-only mode) or "
     "`{ env = \"NAME\" }`. Read and checked with `cert` at load (the key must be the certificate's, "
     "the certificate unexpired)."},
    {"cluster.redis.password", OPT_SECRET, NULL, 0, 0, NOWHERE, 0, config_conv_cluster_password,
     "Redis password (`AUTH`; with the URL's user, `AUTH user password`); required when the URL names a "
     "user."},
    {"cluster.redis.timeout_ms", OPT_INT, "1000", 10, 60000, CFG(cluster.timeout_ms), 0, NULL,
     "Connecting to Redis (each event loop's connection too; the TLS handshake included), and each command "
     "of the deny list's subscriber and of `deny`/`allow` (its whole reply: one still arriving at the end "
     "is a stalled Redis)."},
    {"cluster.redis.rate_timeout_ms", OPT_INT, "50", 1, 5000, CFG(cluster.rate_timeout_ms), 0, NULL,
     "The longest a token request waits for the shared rate limits' answer from Redis; past it (or "
     "while Redis is unreachable) this broker's own buckets decide, and the connection is made again."},
    {"cluster.rate_lease_ms", OPT_INT, "10", 0, 1000, CFG(cluster.rate_lease_ms), 0, NULL,
     "How long a broker may spend shared rate-limit tokens it took ahead from Redis (a lease; 0: none, "
     "one Redis call a request): a limit may admit up to `per_second * rate_lease_ms / 1000` more "
     "than it allows, across the cluster. Limits under `2000 / rate_lease_ms` per second, or with a "
     "burst under 16, are never leased (exact)."},
    {"cluster.name", OPT_STRING, NULL, 0, 0, NOWHERE, OPT_REQUIRED, config_conv_cluster_name,
     "The cluster's name, 1..64 of `A-Z a-z 0-9 _ . -`: every key it writes starts "
     "`courier-broker:<name>:`, so several clusters may share one Redis."},
    {"cluster.cache_key", OPT_SECRET, NULL, 0, 0, NOWHERE, 0, config_conv_cluster_cache_key,
     "Key that encrypts the tokens shared through Redis (`token_cache`): 64 hex digits "
     "(`openssl rand -hex 32`), `{ file = \"PATH\" }` or `{ env = \"NAME\" }`."},
};

const size_t config_n_options = sizeof(config_options) / sizeof(config_options[0]);

/* ------------------------------------------------------------------------ */
/* Rows                                                                     */
/* ------------------------------------------------------------------------ */

/* Levenshtein distance, for "did you mean". Short names only. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[65];

	if (la > 64 || lb > 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* The row for pattern + "." + key (pattern "" at the top), or NULL. */
const struct option *config_find_child(const char *pattern, const char *key)
{
	size_t pl = strlen(pattern);

	for (size_t i = 0; i < config_n_options; i++) {
		const char *n = config_options[i].name;
		if (pl) {
			if (strncmp(n, pattern, pl) != 0 || n[pl] != '.')
				continue;
			n += pl + 1;
		}
		if (strcmp(n, key) == 0)
			return &config_options[i];
	}
	return NULL;
}

/* The last component of a row's name if the row is a direct child of pattern. */
const char *config_child_key(const struct option *o, const char *pattern)
{
	size_t pl = strlen(pattern);
	const char *n = o->name;

	if (pl) {
		if (strncmp(n, pattern, pl) != 0 || n[pl] != '.')
			return NULL;
		n += pl + 1;
	}
	return strchr(n, '.') ? NULL : n;
}

const char *config_suggest(const char *pattern, const char *key)
{
	const char *best = NULL;
	size_t bestd = 3; /* at most two edits away */

	for (size_t i = 0; i < config_n_options; i++) {
		const char *k = config_child_key(&config_options[i], pattern);
		size_t d;
		if (!k || strcmp(k, "*") == 0)
			continue;
		d = edit_distance(k, key);
		if (d < bestd) {
			bestd = d;
			best = k;
		}
	}
	return best;
}

static const char *type_name(enum opt_type t)
{
	switch (t) {
	case OPT_TABLE:
		return "table";
	case OPT_MAP:
		return "table of tables";
	case OPT_STRING:
		return "string";
	case OPT_INT:
		return "integer";
	case OPT_NUMBER:
		return "number";
	case OPT_BOOL:
		return "boolean";
	case OPT_DURATION:
		return "duration";
	case OPT_SECRET:
		return "secret";
	case OPT_LIST:
		return "list of strings";
	case OPT_TABLE_LIST:
		return "list of tables";
	}
	return "?";
}

/* What the file gave instead, for "expected X, got Y". */

void config_print_options(void)
{
	printf("| name | type | default | bounds | description |\n");
	printf("|---|---|---|---|---|\n");
	for (size_t i = 0; i < config_n_options; i++) {
		const struct option *o = &config_options[i];
		char def[96], bounds[64] = "";

		if (o->flags & OPT_UNSUPPORTED)
			snprintf(def, sizeof(def), "—");
		else if (o->flags & OPT_REQUIRED)
			snprintf(def, sizeof(def), "required");
		else if (!o->def)
			snprintf(def, sizeof(def), "—");
		else if (o->flags & OPT_PROSE_DEFAULT)
			snprintf(def, sizeof(def), "%s", o->def);
		else if (o->type == OPT_STRING || o->type == OPT_DURATION)
			snprintf(def, sizeof(def), "`\"%s\"`", o->def);
		else
			snprintf(def, sizeof(def), "`%s`", o->def);
		if (o->type == OPT_INT || o->type == OPT_NUMBER)
			snprintf(bounds, sizeof(bounds), "%.15g..%.15g", o->min, o->max);
		else if (o->type == OPT_DURATION)
			snprintf(bounds, sizeof(bounds), "1s..10y");
		printf("| `%s` | %s | %s | %s | %s |\n", o->name, type_name(o->type), def, bounds, o->desc);
	}
}
