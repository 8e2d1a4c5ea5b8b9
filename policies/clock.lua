-- clock.lua — calendar arithmetic on Unix time, in UTC, for policies.
--
-- A module: `local clock = require("clock")` from any policy in this folder.
-- Policies have no os.date; these few functions are all office_hours.lua
-- needs, and they take the time as an argument (req.now), so tests can fix it.

local M = {}

-- 0 = Sunday .. 6 = Saturday (1970-01-01 was a Thursday).
function M.weekday(t)
  return (t // 86400 + 4) % 7
end

-- Seconds since midnight UTC.
function M.second_of_day(t)
  return t % 86400
end

return M
