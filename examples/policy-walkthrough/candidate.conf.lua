-- broker.conf.lua with the candidate policy live: what `replay` decides with.
-- Only the policy line differs (replay reads no secret and calls nobody).
listen = "127.0.0.1:8080"

courier = { base_url = "https://api.courier.com", timeout_ms = 5000 }

audit_log = { file = "audit.jsonl", inputs = true }

tenants = {
  acme = {
    api_key = { env = "COURIER_API_KEY" },
    auth = { jwt = { algorithms = { "HS256" }, hmac_secret = { env = "APP_JWT_SECRET" } } },
    policy = "policies/acme_next.lua",
    data = "data/acme.json",
    deny_users = { file = "blocked/acme.txt" },
  },
}
