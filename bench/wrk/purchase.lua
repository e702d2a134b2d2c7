-- wrk script: every request buys as a distinct user, with its own request id.
--   wrk -t2 -c64 -d10s -s bench/wrk/purchase.lua http://127.0.0.1:8080/api/v1/items/phone-1/purchase
-- Set WRK_USER_PREFIX to keep users distinct across runs.
local prefix = os.getenv("WRK_USER_PREFIX") or "w"
local thread_id = 0
local counter = 0

function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local user = prefix .. "-" .. tid .. "-" .. counter
  return wrk.format(nil, nil, nil,
    '{"user_id":"' .. user .. '","request_id":"r-' .. user .. '"}')
end
