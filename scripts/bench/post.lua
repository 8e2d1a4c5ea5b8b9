-- wrk script: POST a JSON body with a bearer credential taken from the environment.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_BEARER")

-- BENCH_DISTINCT_USERS=1: every request for another user (u<thread>-<n>),
-- named in X-Forwarded-User (a tenant with auth.trusted_proxy from 127.0.0.1)
-- and in the body: no two requests are identical grants, so none shares
-- another's Courier call (single-flight) and each costs one.
if (os.getenv("BENCH_DISTINCT_USERS") or "") ~= "" then
  local threads = 0
  function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
  end
  local n = 0
  function request()
    n = n + 1
    local user = string.format("u%d-%d", tid or 0, n)
    return wrk.format(nil, nil, { ["Content-Type"] = "application/json", ["X-Forwarded-User"] = user },
      '{"user_id":"' .. user .. '"}')
  end
end
