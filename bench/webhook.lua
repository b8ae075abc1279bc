-- wrk script: POST /v1/alertmanager, every request a distinct alert instance.
--
-- usage: wrk ... -s bench/webhook.lua URL -- RUN MODE TENANTS TOKEN
--   RUN      two hex digits, different for every run against one database, so that
--            fingerprints never repeat across runs (a repeat would be a duplicate)
--   MODE     "record" (tenant_id only: recorded, no breaker effect) or
--            "isolate" (tenant_id + isolate="true": breaker and incident work)
--   TENANTS  how many tenants the alerts spread over (tenant-0 .. tenant-(N-1))
--   TOKEN    the webhook bearer token
--
-- done() prints one line "BENCH_RESULT {json}" that bench/__main__.py reads.

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local run, mode, tenants, token
local counter = 0
non2xx = 0
first_error = ""

function init(args)
  run = args[1]
  mode = args[2]
  tenants = tonumber(args[3])
  token = args[4]
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. token
end

local BODY = [[{"version":"4","groupKey":"{}/{isolate=\"%s\"}:{alertname=\"TenantErrorRatioHigh\", tenant_id=\"%s\"}","truncatedAlerts":0,"status":"firing","receiver":"blast-radius","groupLabels":{"alertname":"TenantErrorRatioHigh","tenant_id":"%s"},"commonLabels":%s,"commonAnnotations":{"summary":"error ratio over 5%% for 5m"},"externalURL":"http://alertmanager.bench:9093","alerts":[{"status":"firing","labels":%s,"annotations":{"summary":"error ratio over 5%% for 5m"},"startsAt":"2026-11-24T05:%02d:%02d.%09dZ","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus.bench:9090/graph?g0.expr=tenant%%3Arag_errors%%3Aratio_rate5m+%%3E+0.05","fingerprint":"%s"}]}]]

function request()
  counter = counter + 1
  -- Spread the threads' sequences over the tenants: thread t starts at tenant t * 499.
  local tenant = "tenant-" .. ((tid * 499 + counter) % tenants)
  local isolate = mode == "isolate" and "true" or "false"
  local labels
  if mode == "isolate" then
    labels = string.format(
      '{"alertname":"TenantErrorRatioHigh","isolate":"true","severity":"critical","tenant_id":"%s"}',
      tenant)
  else
    labels = string.format(
      '{"alertname":"TenantErrorRatioHigh","severity":"warning","tenant_id":"%s"}', tenant)
  end
  -- 16 hex digits: run (2), thread (2), counter (12): distinct across runs and threads.
  local fp = string.format("%s%02x%012x", run, tid, counter)
  local body = string.format(BODY, isolate, tenant, tenant, labels, labels,
    tid % 60, math.floor(counter / 1000000000) % 60, counter % 1000000000, fp)
  return wrk.format(nil, "/v1/alertmanager", nil, body)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_error == "" then
      first_error = status .. " " .. string.sub(body or "", 1, 300)
    end
  end
end

local function q(s)
  return '"' .. string.gsub(string.gsub(s, '\\', '\\\\'), '"', '\\"') .. '"'
end

function done(summary, latency, requests)
  local bad, sample = 0, ""
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non2xx") or 0)
    local e = thread:get("first_error") or ""
    if sample == "" then sample = e end
  end
  sample = string.gsub(sample, "[%c]", " ")
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"non2xx":%d,"first_error":%s,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
    .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, bad, q(sample),
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
