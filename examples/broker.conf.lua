-- courier-broker configuration (Lua 5.4).
--
-- This file is evaluated once at start-up and on every SIGHUP, in a sandbox:
-- no io, os, require, load or dofile; string, table and math are there. The
-- globals it assigns are the configuration; anything the broker does not know
-- is an error that names the key, so keep helper variables `local`.
--
-- Paths are relative to this file's folder. Secrets are never written here:
-- each one is { env = "NAME" } or { file = "PATH" } (a file must be chmod 600).
--
-- `courier-broker check -c examples/broker.conf.lua` validates it.
-- Every option, with its default and bounds: docs/configuration.md.

-- Where the broker listens: "host:port" or "[ipv6]:port". Put it behind your
-- TLS-terminating proxy, or keep it on loopback.
listen = "127.0.0.1:8080"

-- threads = 2                  -- HTTP worker threads
-- max_body_bytes = 16384       -- larger request bodies get 413
-- drain_timeout_ms = 10000     -- on SIGTERM, wait this long for in-flight requests

courier = {
  -- The environment variable COURIER_BASE_URL overrides this, as it does for
  -- Courier's official SDKs (the demo points it at the local test double).
  -- EU workspaces: "https://api.eu.courier.com".
  base_url = "https://api.courier.com",
  timeout_ms = 5000,            -- a whole call to Courier, connecting included
  -- connect_timeout_ms = 2000,
}

-- Each policy decision runs under these budgets; going over one denies the
-- request with policy_error (never a token).
-- policy_limits = { max_instructions = 1000000, max_memory_bytes = 8388608, timeout_ms = 50 }

tenants = {
  -- `default` serves POST /v1/token; any tenant serves POST /v1/tenants/NAME/token.
  default = {
    -- The Courier API key of this workspace and environment (test or production).
    api_key = { env = "COURIER_API_KEY" },

    -- A Lua file returning decide(req); see docs/policies.md.
    policy = "../policies/default.lua",

    -- How the frontend's requester is authenticated.
    auth = {
      jwt = {
        algorithms = { "HS256" },                   -- required allow-list: HS256, HS384, HS512
        hmac_secret = { env = "APP_JWT_SECRET" },   -- the key your app signs its session JWTs with
        -- issuer = "https://app.example.com",      -- checked exactly when given
        -- audience = "courier-broker",             -- checked exactly when given
        leeway_s = 30,                              -- clock skew allowed on exp / nbf
        -- subject_claim = "sub",                   -- becomes req.identity.subject
      },
      -- none = true,   -- development only: the policy sees an unauthenticated requester
    },

    -- Ceiling on any token's lifetime, whatever the request or policy asks.
    -- Courier tokens cannot be revoked: keep it short.
    max_expires_in = "7d",
    -- default_expires_in = "1h",   -- when neither request nor policy gives one

    -- Ceiling on scopes; the broker adds the single user_id:<user> scope
    -- itself. This list (the "push" tier) is the default.
    allowed_scopes = { "inbox:read:messages", "inbox:write:events", "read:brands",
                       "read:preferences", "write:preferences",
                       "read:user-tokens", "write:user-tokens" },

    -- Tokens issued per second for this tenant (0 = no limit), and the burst.
    -- rate_limit = { per_second = 50, burst = 100 },
  },
}
