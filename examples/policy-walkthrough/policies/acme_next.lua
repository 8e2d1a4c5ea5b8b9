-- The candidate: as acme.lua, but support agents get read-only inbox access
-- (no inbox:write:events: an agent must not mark a customer's messages read)
-- for 10 minutes.
local function is_support(identity)
  return identity.claims.role == "support"
end

return function(req)
  local id = req.identity
  if not id.authenticated then
    return { allow = false, reason = "sign in first" }
  end
  if id.subject == req.user_id then
    return { allow = true, tier = "inbox", expires_in = "1h", reason = "own inbox" }
  end
  if is_support(id) then
    local org = req.user_id:match("^([^:]+):")
    for _, vip in ipairs(broker.data.vips) do
      if vip == req.user_id then
        return { allow = false, reason = "support never reads a VIP's inbox" }
      end
    end
    for _, allowed in ipairs(broker.data.support_may_read) do
      if allowed == org then
        broker.log("support", id.subject, "reads", req.user_id)
        return { allow = true, scopes = { "inbox:read:messages" }, expires_in = "10m",
                 reason = "support (read-only) for " .. org }
      end
    end
    return { allow = false, reason = "organisation " .. tostring(org) .. " has not opted in to support" }
  end
  return { allow = false, reason = "not your inbox" }
end
