-- wrk script: POST the benchmark's Ping as JSON (wrk -s benchmarks/post.lua URL).
wrk.method = "POST"
wrk.body = '{"name": "ada", "count": 3}'
wrk.headers["Content-Type"] = "application/json"
