-- courier-broker configuration for several tenants, each with its own policy.
--
-- The policies live in ../policies with their tests; `courier-broker check -c
-- examples/multi-tenant.conf.lua` loads everything and runs every tenant's tests
-- under that tenant's ceiling (allowed_scopes, max_expires_in).
--
--   default  POST /v1/token                      a user gets their own inbox (default.lua)
--   support  POST /v1/tenants/support/token      support staff read a customer's inbox
--                                                 for 15 minutes (support.lua + its data)
--   mobile   POST /v1/tenants/mobile/token       push-token scopes only for the app (mobile.lua)
--   office   POST /v1/tenants/office/token       only during office hours (office_hours.lua)
--
-- Secrets come from the environment: COURIER_API_KEY (one Courier workspace
-- here; give each tenant its own key when they are separate workspaces) and
-- APP_JWT_SECRET, the key the frontends sign their session JWTs with.

listen = "127.0.0.1:8080"

courier = {
  base_url = "https://api.courier.com",   -- COURIER_BASE_URL overrides it
  timeout_ms = 5000,
}

local INBOX = { "inbox:read:messages", "inbox:write:events", "read:brands" }

-- Every tenant here authenticates its requesters the same way.
local function app_jwt()
  return {
    jwt = {
      algorithms = { "HS256" },
      hmac_secret = { env = "APP_JWT_SECRET" },
    },
  }
end

tenants = {
  default = {
    api_key = { env = "COURIER_API_KEY" },
    policy = "../policies/default.lua",
    auth = app_jwt(),
  },

  support = {
    api_key = { env = "COURIER_API_KEY" },
    policy = "../policies/support.lua",
    -- Which organisations opted in, and the support network: broker.data.
    -- Its SHA-256 is part of the policy revision (X-Policy-Revision).
    data = "../policies/support_data.json",
    auth = app_jwt(),
    -- The envelope backs the policy up: never more than the inbox scopes,
    -- never longer than an hour (the policy gives support 15 minutes).
    allowed_scopes = INBOX,
    max_expires_in = "1h",
  },

  mobile = {
    api_key = { env = "COURIER_API_KEY" },
    policy = "../policies/mobile.lua",
    auth = app_jwt(),
    max_expires_in = "1d",
  },

  office = {
    api_key = { env = "COURIER_API_KEY" },
    policy = "../policies/office_hours.lua",
    auth = app_jwt(),
    allowed_scopes = INBOX,
    max_expires_in = "1h",
  },
}
