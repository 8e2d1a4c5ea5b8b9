-- support_test.lua — cases for support.lua. broker.data is this file's own
-- fixture (data below), never the tenant's live support_data.json: moving an
-- organisation in or out of support access in production cannot fail a reload.

local INBOX = { "inbox:read:messages", "inbox:write:events", "read:brands" }
local READ_ONLY = { "inbox:read:messages", "read:brands" }
local VPN = { ip = "10.20.3.4" }

local function agent(claims)
  local c = { sub = "sam", role = "support", org = "acme" }
  for k, v in pairs(claims or {}) do c[k] = v end
  return { authenticated = true, method = "jwt", subject = "sam", claims = c }
end

return {
  data = {
    support_orgs = { acme = true, globex = true },
    support_networks = { "10.20.0.0/16", "2001:db8:5::/48" },
  },
  now = 1795422600,

  {
    name = "a user gets their own inbox",
    req = { user_id = "acme:alice", identity = { authenticated = true, subject = "acme:alice", claims = {} } },
    expect = { allow = true, scopes = INBOX, expires_in = "1h" },
  },
  {
    name = "support reads a user of their organisation for 15 minutes",
    req = { user_id = "acme:alice", identity = agent(), client = VPN },
    expect = { allow = true, scopes = READ_ONLY, expires_in = 900, reason = "support read-only access",
               logs = { "support access by sam to acme:alice for 900 s" } },
  },
  {
    name = "support may ask for less than 15 minutes",
    req = { user_id = "acme:alice", identity = agent(), client = VPN, expires_in = 300 },
    expect = { allow = true, scopes = READ_ONLY, expires_in = 300 },
  },
  {
    name = "asking for more than 15 minutes still gets 15",
    req = { user_id = "acme:alice", identity = agent(), client = VPN, expires_in = 7200 },
    expect = { allow = true, expires_in = 900 },
  },
  {
    name = "a role in a roles list counts",
    req = { user_id = "acme:alice", identity = agent({ role = "engineer", roles = { "engineer", "support" } }),
            client = { ip = "2001:db8:5::17" } },
    expect = { allow = true, scopes = READ_ONLY },
  },
  {
    name = "a roles list without support is denied",
    req = { user_id = "acme:alice", identity = agent({ role = "engineer", roles = { "engineer", "sales" } }),
            client = VPN },
    expect = { allow = false, reason = "a user may only have a token for their own inbox" },
  },
  {
    name = "another organisation's user is denied",
    req = { user_id = "globex:bob", identity = agent(), client = VPN },
    expect = { allow = false, reason = "support staff may only read users of their own organisation" },
  },
  {
    name = "a user id without an organisation is denied",
    req = { user_id = "alice", identity = agent(), client = VPN },
    expect = { allow = false },
  },
  {
    name = "an organisation that opted out since is denied",
    data = { support_orgs = { globex = true }, support_networks = { "10.20.0.0/16" } },
    req = { user_id = "acme:alice", identity = agent(), client = VPN },
    expect = { allow = false, reason = "organisation acme has not opted in to support access", logs = {} },
  },
  {
    name = "an organisation that did not opt in is denied",
    req = { user_id = "initech:peter", identity = agent({ org = "initech" }), client = VPN },
    expect = { allow = false, reason = "organisation initech has not opted in to support access" },
  },
  {
    name = "outside the support network is denied",
    req = { user_id = "acme:alice", identity = agent(), client = { ip = "192.0.2.7" } },
    expect = { allow = false, reason = "support access only from the support network" },
  },
  {
    name = "without a client address is denied",
    req = { user_id = "acme:alice", identity = agent() },
    expect = { allow = false },
  },
  {
    name = "without the support role is denied",
    req = { user_id = "acme:alice", identity = agent({ role = "sales" }), client = VPN },
    expect = { allow = false, reason = "a user may only have a token for their own inbox" },
  },
  {
    name = "an unauthenticated requester is denied",
    req = { user_id = "acme:alice", client = VPN },
    expect = { allow = false, reason = "not authenticated" },
  },
}
