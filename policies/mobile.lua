-- mobile.lua — push-token scopes only for requests from the company's app.
--
-- The mobile app registers its device tokens with Courier, so it needs the
-- push tier (read:user-tokens write:user-tokens). A browser, or any other
-- client, gets the preferences tier of the same user, never push. A request
-- is from the app when it carries the app's id in the X-App-Id header, or a
-- User-Agent of the app ("ExampleApp/2.3 (iOS 17.1)"). Both are sent by the
-- client and could be copied: they choose among scopes the authenticated user
-- may have anyway, they never authenticate anybody.

local APP_ID = "com.example.app"
local APP_AGENT = "^ExampleApp/%d+%.%d+"

local function from_app(req)
  if req.headers["x-app-id"] == APP_ID then
    return true
  end
  local agent = req.client.user_agent
  return agent ~= nil and agent:find(APP_AGENT) ~= nil
end

return function(req)
  local id = req.identity
  if not id.authenticated or id.subject ~= req.user_id then
    return { allow = false, reason = "a user may only have a token for their own inbox" }
  end
  if from_app(req) then
    return { allow = true, tier = "push", expires_in = "1d", reason = "the mobile app" }
  end
  return { allow = true, tier = "preferences", expires_in = "1h", reason = "not the mobile app: no push scopes" }
end
