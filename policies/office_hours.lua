-- office_hours.lua — tokens only during office hours: 08:00–18:00 UTC, Monday to Friday.
--
-- A back-office tenant whose users work office hours: outside them, every
-- request is denied. Inside, an authenticated user gets their own inbox, for
-- an hour at most and never past 18:00, so no token outlives the working day.
-- The time is req.now (Unix seconds, set by the broker; tests set it).

local clock = require("clock")

local OPEN, CLOSE = 8 * 3600, 18 * 3600 -- seconds since midnight UTC
local MAX_LIFETIME = 3600

return function(req)
  local id = req.identity
  if not id.authenticated or id.subject ~= req.user_id then
    return { allow = false, reason = "a user may only have a token for their own inbox" }
  end
  local day = clock.weekday(req.now)
  if day == 0 or day == 6 then
    return { allow = false, reason = "outside office hours (weekend)" }
  end
  local now = clock.second_of_day(req.now)
  if now < OPEN or now >= CLOSE then
    return { allow = false, reason = "outside office hours (08:00-18:00 UTC)" }
  end
  return { allow = true, tier = "inbox", expires_in = math.min(MAX_LIFETIME, CLOSE - now) }
end
