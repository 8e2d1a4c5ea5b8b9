-- mobile_test.lua — cases for mobile.lua.

local PREFERENCES = { "inbox:read:messages", "inbox:write:events", "read:brands",
                      "read:preferences", "write:preferences" }
local PUSH = { "inbox:read:messages", "inbox:write:events", "read:brands",
               "read:preferences", "write:preferences", "read:user-tokens", "write:user-tokens" }

local function alice()
  return { authenticated = true, method = "jwt", subject = "alice", claims = { sub = "alice" } }
end

return {
  {
    name = "the app's id header gets push scopes for a day",
    req = { user_id = "alice", identity = alice(), headers = { ["x-app-id"] = "com.example.app" } },
    expect = { allow = true, scopes = PUSH, expires_in = "1d", reason = "the mobile app" },
  },
  {
    name = "the app's user agent gets push scopes",
    req = { user_id = "alice", identity = alice(), client = { user_agent = "ExampleApp/2.3 (iOS 17.1)" } },
    expect = { allow = true, scopes = PUSH },
  },
  {
    name = "another app id gets no push scopes",
    req = { user_id = "alice", identity = alice(), headers = { ["x-app-id"] = "com.example.other" } },
    expect = { allow = true, scopes = PREFERENCES, expires_in = 3600 },
  },
  {
    name = "a browser gets no push scopes",
    req = { user_id = "alice", identity = alice(),
            client = { user_agent = "Mozilla/5.0 (X11; Linux x86_64) ExampleApp/2.3" } },
    expect = { allow = true, scopes = PREFERENCES, reason = "not the mobile app: no push scopes" },
  },
  {
    name = "no headers and no user agent get no push scopes",
    req = { user_id = "alice", identity = alice() },
    expect = { allow = true, scopes = PREFERENCES },
  },
  {
    name = "the app cannot get someone else's token",
    req = { user_id = "bob", identity = alice(), headers = { ["x-app-id"] = "com.example.app" } },
    expect = { allow = false },
  },
  {
    name = "an unauthenticated app is denied",
    req = { user_id = "alice", headers = { ["x-app-id"] = "com.example.app" } },
    expect = { allow = false },
  },
}
