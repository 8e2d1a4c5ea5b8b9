-- The configuration `make demo` runs: examples/broker.conf.lua on a free
-- loopback port. COURIER_BASE_URL points it at the local Courier test double.
listen = "127.0.0.1:0"

courier = { base_url = "https://api.courier.com", timeout_ms = 5000 }

tenants = {
  default = {
    api_key = { env = "COURIER_API_KEY" },
    policy = "../policies/default.lua",
    auth = { jwt = { algorithms = { "HS256" }, hmac_secret = { env = "APP_JWT_SECRET" } } },
    max_expires_in = "1d",
  },
}
