-- The tests of acme.lua: `courier-broker test --coverage policies/`.
-- Fixtures: the data file beside the tests (never the live data), one clock,
-- and a default identity (sam of support) that a case may replace.
return {
  data = "fixtures/orgs.json",
  now = 1795422600, -- 2026-11-23 09:30 CET
  identity = { authenticated = true, method = "jwt", subject = "acme:sam",
               claims = { sub = "acme:sam", role = "support" } },

  { name = "a user opens their own inbox for an hour",
    identity = { authenticated = true, subject = "acme:alice", claims = { sub = "acme:alice" } },
    req = { user_id = "acme:alice" },
    expect = { allow = true, expires_in = "1h", reason = "own inbox" } },
  { name = "support reads a customer's inbox for 15 minutes",
    req = { user_id = "globex:bob" },
    expect = { allow = true, expires_in = 900, logs = { "support acme:sam reads globex:bob" } } },
  { name = "support never reads a VIP's inbox",
    req = { user_id = "acme:ceo" },
    expect = { allow = false, reason = "support never reads a VIP's inbox" } },
  { name = "an organisation that has not opted in",
    req = { user_id = "initech:peter" },
    expect = { allow = false, reason = "organisation initech has not opted in to support" } },
  { name = "someone else's inbox",
    identity = { authenticated = true, subject = "acme:alice", claims = { sub = "acme:alice" } },
    req = { user_id = "acme:bob" },
    expect = { allow = false, reason = "not your inbox" } },
  { name = "signed out", identity = { authenticated = false, method = "none" },
    req = { user_id = "acme:alice" },
    expect = { allow = false, reason = "sign in first" } },
}
