-- acme: who may have a Courier inbox token for which user.
--   * everyone signed in: their own inbox, for an hour;
--   * support agents: a customer's inbox of an organisation that allows
--     support access (broker.data.support_may_read), for 15 minutes, never a VIP's.
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
        return { allow = true, tier = "inbox", expires_in = "15m", reason = "support for " .. org }
      end
    end
    return { allow = false, reason = "organisation " .. tostring(org) .. " has not opted in to support" }
  end
  return { allow = false, reason = "not your inbox" }
end
