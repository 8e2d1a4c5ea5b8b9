-- support.lua — support staff may read a customer's inbox, briefly.
--
-- Users get their own inbox as usual. Besides, a requester whose token has
-- the role claim "support" may get a read-only inbox token
-- (inbox:read:messages read:brands: no events written, no preferences) for a
-- user of their own organisation, for 15 minutes at most, when:
--   * user ids are "ORG:NAME" and ORG equals the requester's org claim (the
--     organisation is part of the id, so the request body cannot lie about it);
--   * the organisation opted in to support access (broker.data.support_orgs);
--   * the request comes from the support network (broker.data.support_networks).
-- Every support grant is written to the request's log line (broker.log).
--
-- Its data: `data = "support_data.json"` in the configuration; `courier-broker
-- test` reads support_data.json beside this file.

local READ_ONLY = { "inbox:read:messages", "read:brands" }
local SUPPORT_LIFETIME = 15 * 60

local function has_role(claims, role)
  if claims.role == role then
    return true
  end
  if type(claims.roles) == "table" then
    for _, r in ipairs(claims.roles) do
      if r == role then
        return true
      end
    end
  end
  return false
end

local function org_of(user_id)
  return user_id:match("^([%w_-]+):")
end

return function(req)
  local id = req.identity
  if not id.authenticated or id.subject == nil then
    return { allow = false, reason = "not authenticated" }
  end
  if id.subject == req.user_id then
    return { allow = true, tier = "inbox", expires_in = "1h" }
  end
  if not has_role(id.claims, "support") then
    return { allow = false, reason = "a user may only have a token for their own inbox" }
  end
  local org = org_of(req.user_id)
  if org == nil or org ~= id.claims.org then
    return { allow = false, reason = "support staff may only read users of their own organisation" }
  end
  if not broker.data.support_orgs[org] then
    return { allow = false, reason = "organisation " .. org .. " has not opted in to support access" }
  end
  if not broker.cidr_match(req.client.ip, broker.data.support_networks) then
    return { allow = false, reason = "support access only from the support network" }
  end
  local asked = req.expires_in
  local lifetime = SUPPORT_LIFETIME
  if math.type(asked) == "integer" and asked > 0 and asked < lifetime then
    lifetime = asked
  end
  broker.log("support access by", id.subject, "to", req.user_id, "for", lifetime, "s")
  return { allow = true, scopes = READ_ONLY, expires_in = lifetime, reason = "support read-only access" }
end
