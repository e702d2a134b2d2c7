-- wrk script: a static purchase body without a request id, for the winning
-- path of an item whose per-user limit is never reached: every request is a
-- new durable order, and wrk runs no Lua per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"user_id":"u-42","quantity":1}'
