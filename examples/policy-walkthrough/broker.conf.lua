-- The configuration of the docs/policies.md walkthrough ("From a blank file
-- to a shadowed, replayed, reloaded policy"). One tenant, acme; its users
-- sign in to the app, whose session JWTs (HS256) the broker verifies.
-- tests/integration/test_policy_walkthrough.py runs every step on these files.
listen = "127.0.0.1:8080"

courier = { base_url = "https://api.courier.com", timeout_ms = 5000 }

-- Every decision, with the request as the policy saw it: what `replay` reads.
audit_log = { file = "audit.jsonl", inputs = true }

tenants = {
  acme = {
    api_key = { env = "COURIER_API_KEY" },
    auth = { jwt = { algorithms = { "HS256" }, hmac_secret = { env = "APP_JWT_SECRET" } } },
    policy = "policies/acme.lua",
    data = "data/acme.json",
    -- shadow_policy = "policies/acme_next.lua",
    deny_users = { file = "blocked/acme.txt" },
  },
}
