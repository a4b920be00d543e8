-- wrk script: POST the benchmark's Ping as JSON with a NEW Idempotency-Key on every request
-- (wrk -s benchmarks/post_keyed.lua URL -- PREFIX). The key is PREFIX-THREAD-COUNT: wrk's
-- threads each have their own Lua state, so setup() numbers them and each counts its own
-- requests; http_dispatch.py passes a PREFIX of its own to every wrk run, so no key is ever
-- seen twice (a replay would measure the store's read, not a new key's claim and store).
-- "Connection: close" as in post.lua.
local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("thread_number", threads)
end

function init(args)
   key_prefix = args[1] or "bench"
   sent = 0
end

function request()
   sent = sent + 1
   local headers = {
      ["Content-Type"] = "application/json",
      ["Connection"] = "close",
      ["Idempotency-Key"] = key_prefix .. "-" .. tostring(thread_number) .. "-" .. tostring(sent),
   }
   return wrk.format("POST", nil, headers, '{"name": "ada", "count": 3}')
end
