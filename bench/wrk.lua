-- scripts/bench's wrk script: an optional request body, and a JSON line
-- with exact figures at the end (wrk's own output rounds).
--   BENCH_METHOD  request method (default GET)
--   BENCH_BODY    request body size in bytes (default none)
local method = os.getenv("BENCH_METHOD")
local body_size = tonumber(os.getenv("BENCH_BODY") or "0")
if method and method ~= "" then wrk.method = method end
if body_size and body_size > 0 then
   wrk.body = string.rep("x", body_size)
   wrk.headers["Content-Type"] = "application/octet-stream"
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"bytes":%d,"duration_us":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
      summary.requests, summary.bytes, summary.duration,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.max,
      latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
end
