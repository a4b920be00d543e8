-- wrk script: POST the benchmark's Ping as JSON (wrk -s benchmarks/post.lua URL).
-- "Connection: close" makes every request a new connection, as gunicorn's sync workers do
-- anyway: with keep-alive, gthread workers would keep whatever share of wrk's 16
-- connections each happened to accept first, and the runs would measure that luck.
wrk.method = "POST"
wrk.body = '{"name": "ada", "count": 3}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Connection"] = "close"
