-- wrk script: one fixed purchase body, for the sold-out path.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"user_id":"u-42","quantity":1,"request_id":"r-1"}'
