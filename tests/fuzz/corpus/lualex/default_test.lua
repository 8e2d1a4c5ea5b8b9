-- default_test.lua — cases for default.lua, run by `courier-broker test`
-- (and by `check`) through the same engine and envelope as a live request.

local INBOX = { "inbox:read:messages", "inbox:write:events", "read:brands" }
local PREFERENCES = { "inbox:read:messages", "inbox:write:events", "read:brands",
                      "read:preferences", "write:preferences" }
local PUSH = { "inbox:read:messages", "inbox:write:events", "read:brands",
               "read:preferences", "write:preferences",
               "read:user-tokens", "write:user-tokens" }

local function alice(claims)
  return { authenticated = true, method = "jwt", subject = "alice", claims = claims or { sub = "alice" } }
end

return {
  {
    name = "a user gets their own inbox for an hour",
    req = { user_id = "alice", identity = alice() },
    expect = { allow = true, scopes = INBOX, expires_in = 3600 },
  },
  {
    name = "the tier claim picks preferences",
    req = { user_id = "alice", identity = alice({ sub = "alice", tier = "preferences" }) },
    expect = { allow = true, scopes = PREFERENCES, expires_in = "1h" },
  },
  {
    name = "the tier claim picks push",
    req = { user_id = "alice", identity = alice({ sub = "alice", tier = "push" }) },
    expect = { allow = true, scopes = PUSH },
  },
  {
    name = "a lifetime asked for within a day is granted",
    req = { user_id = "alice", expires_in = "2h", identity = alice() },
    expect = { allow = true, scopes = INBOX, expires_in = 7200 },
  },
  {
    name = "a lifetime asked for in seconds is granted",
    req = { user_id = "alice", expires_in = 600, identity = alice() },
    expect = { allow = true, expires_in = 600 },
  },
  {
    name = "exactly one day is granted",
    req = { user_id = "alice", expires_in = "1d", identity = alice() },
    expect = { allow = true, expires_in = 86400 },
  },
  {
    name = "more than a day falls back to an hour",
    req = { user_id = "alice", expires_in = "2d", identity = alice() },
    expect = { allow = true, expires_in = 3600 },
  },
  {
    name = "scopes asked for do not widen the grant",
    req = { user_id = "alice", scopes = { "write:user-tokens" }, identity = alice() },
    expect = { allow = true, scopes = INBOX },
  },
  {
    name = "someone else's inbox is denied",
    req = { user_id = "bob", identity = alice() },
    expect = { allow = false, reason = "a user may only have a token for their own inbox" },
  },
  {
    name = "an unauthenticated requester is denied",
    req = { user_id = "alice", identity = { authenticated = false, method = "none" } },
    expect = { allow = false, reason = "not authenticated" },
  },
  {
    name = "a credential without a subject is denied",
    req = { user_id = "alice", identity = { authenticated = true, method = "jwt", claims = {} } },
    expect = { allow = false, reason = "the credential names no user" },
  },
  {
    name = "an unknown tier claim is denied",
    req = { user_id = "alice", identity = alice({ sub = "alice", tier = "admin" }) },
    expect = { allow = false, reason = "unknown tier claim" },
  },
}
