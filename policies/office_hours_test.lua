-- office_hours_test.lua — cases for office_hours.lua, with req.now fixed.

local INBOX = { "inbox:read:messages", "inbox:write:events", "read:brands" }

-- Monday 2026-11-23 00:00:00 UTC.
local MONDAY = 1795392000
local HOUR = 3600

local function alice()
  return { authenticated = true, method = "jwt", subject = "alice", claims = { sub = "alice" } }
end

return {
  {
    name = "Monday 10:00 is open: an hour",
    req = { user_id = "alice", identity = alice(), now = MONDAY + 10 * HOUR },
    expect = { allow = true, scopes = INBOX, expires_in = 3600 },
  },
  {
    name = "the token never outlives 18:00",
    req = { user_id = "alice", identity = alice(), now = MONDAY + 17 * HOUR + 30 * 60 },
    expect = { allow = true, scopes = INBOX, expires_in = 1800 },
  },
  {
    name = "08:00 sharp is open",
    req = { user_id = "alice", identity = alice(), now = MONDAY + 8 * HOUR },
    expect = { allow = true, expires_in = 3600 },
  },
  {
    name = "07:59 is closed",
    req = { user_id = "alice", identity = alice(), now = MONDAY + 8 * HOUR - 60 },
    expect = { allow = false, reason = "outside office hours (08:00-18:00 UTC)" },
  },
  {
    name = "18:00 sharp is closed",
    req = { user_id = "alice", identity = alice(), now = MONDAY + 18 * HOUR },
    expect = { allow = false },
  },
  {
    name = "Friday afternoon is open",
    req = { user_id = "alice", identity = alice(), now = MONDAY + 4 * 24 * HOUR + 15 * HOUR },
    expect = { allow = true, expires_in = 3600 },
  },
  {
    name = "Saturday is closed",
    req = { user_id = "alice", identity = alice(), now = MONDAY + 5 * 24 * HOUR + 10 * HOUR },
    expect = { allow = false, reason = "outside office hours (weekend)" },
  },
  {
    name = "Sunday is closed",
    req = { user_id = "alice", identity = alice(), now = MONDAY - 24 * HOUR + 10 * HOUR },
    expect = { allow = false, reason = "outside office hours (weekend)" },
  },
  {
    name = "someone else's inbox is denied, even in office hours",
    req = { user_id = "bob", identity = alice(), now = MONDAY + 10 * HOUR },
    expect = { allow = false },
  },
  {
    name = "an unauthenticated requester is denied",
    req = { user_id = "alice", now = MONDAY + 10 * HOUR },
    expect = { allow = false },
  },
}
