-- default.lua — a user may have a token for their own inbox, and nothing else.
--
-- Allows a requester who is authenticated and whose subject is the user the
-- token is for. The identity's `tier` claim ("inbox", "preferences" or
-- "push"; "inbox" when absent) picks the scopes. The token lives as long as
-- the requester asked when that is at most a day, else one hour.
--
-- The broker still applies the tenant's ceiling after this: the token carries
-- exactly one user_id scope, only scopes from allowed_scopes, and a lifetime
-- capped at max_expires_in. Globals cannot be created: keep helpers local.

local MAX_ASKED = 24 * 3600 -- seconds
local DEFAULT_LIFETIME = "1h"
local TIERS = { inbox = true, preferences = true, push = true }

-- The lifetime asked for (a duration string or seconds), when it is valid and
-- at most a day; otherwise the default.
local function lifetime(asked)
  local seconds
  if type(asked) == "string" then
    local ok, s = pcall(broker.duration, asked)
    seconds = ok and s or nil
  elseif math.type(asked) == "integer" then
    seconds = asked
  end
  if seconds and seconds > 0 and seconds <= MAX_ASKED then
    return seconds
  end
  return DEFAULT_LIFETIME
end

return function(req)
  local id = req.identity
  if not id.authenticated then
    return { allow = false, reason = "not authenticated" }
  end
  if id.subject == nil then
    return { allow = false, reason = "the credential names no user" }
  end
  if id.subject ~= req.user_id then
    return { allow = false, reason = "a user may only have a token for their own inbox" }
  end
  local tier = id.claims.tier
  if tier == nil then
    tier = "inbox"
  elseif not TIERS[tier] then
    return { allow = false, reason = "unknown tier claim" }
  end
  return { allow = true, tier = tier, expires_in = lifetime(req.expires_in) }
end
