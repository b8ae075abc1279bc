-- wrk script: GET /v1/tenants/tenant-N/breaker, N cycling over the tenants.
-- The same script drives the receiver and the hello-world server (bench/hello.py).
--
-- usage: wrk ... -s bench/reads.lua URL -- TENANTS TOKEN
--
-- No response() callback: it would make wrk parse every answer in Lua, and at these rates
-- the load generator must stay cheap. Non-2xx answers are wrk's errors.status (>= 400).

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local tenants
local counter = 0

function init(args)
  tenants = tonumber(args[1])
  wrk.headers["Authorization"] = "Bearer " .. args[2]
end

function request()
  counter = counter + 1
  return wrk.format("GET", "/v1/tenants/tenant-" .. ((tid * 499 + counter) % tenants) .. "/breaker")
end

function done(summary, latency, requests)
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"non2xx":%d,"first_error":"",'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
    .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
