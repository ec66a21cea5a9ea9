-- An independent load generator for `make bench`: wrk sending the same pre-signed Twilio status
-- callbacks as `switchboard-load http`, in the same order, wrapping around.
--
--   switchboard-load presign --public-url URL --requests N --out requests.tsv
--   WRK_REQUESTS=requests.tsv WRK_THREADS=2 WRK_CONNECTIONS=64 WRK_TARGET=name WRK_OUT=run.json \
--     wrk -t2 -c64 -d15s -s bench/wrk/rotate.lua URL
--
-- (wrk hands script arguments to the threads only, not to `done`, hence the environment.)
-- requests.tsv holds one request a line: `signature TAB event id TAB form body`. Thread i of n
-- sends requests i, i+n, i+2n, ... so that together the threads walk the file in order, as the
-- workers of `switchboard-load` do. WRK_OUT gets the run in `switchboard-load`'s result format
-- (non-2xx answers and socket errors counted as errors), for `switchboard-load report`.

local PATH = "/webhooks/twilio/calls"

local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

local requests = {}
local next_request = 0
local step = 1

function init(_)
  local path = assert(os.getenv("WRK_REQUESTS"), "WRK_REQUESTS: the presigned requests file")
  local file = assert(io.open(path, "r"), "cannot open " .. path)
  for line in file:lines() do
    local signature, event_id, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
    assert(signature, "not a request line: " .. line)
    requests[#requests + 1] = wrk.format("POST", PATH, {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["X-Twilio-Signature"] = signature,
      ["I-Twilio-Idempotency-Token"] = event_id,
    }, body)
  end
  file:close()
  assert(#requests > 0, "no requests in " .. path)
  next_request = index
  step = tonumber(os.getenv("WRK_THREADS")) or 1
end

function request()
  local r = requests[(next_request % #requests) + 1]
  next_request = next_request + step
  return r
end

function done(summary, latency, _)
  local target, out = os.getenv("WRK_TARGET") or "wrk", os.getenv("WRK_OUT")
  local connections = tonumber(os.getenv("WRK_CONNECTIONS")) or 0
  local errors = summary.errors
  local socket_errors = errors.connect + errors.read + errors.write + errors.timeout
  local failed = errors.status + socket_errors
  local seconds = summary.duration / 1e6
  local ms = function(micros) return micros / 1000 end
  local json = string.format(
    '{"target":"%s","mode":"concurrency %d","completed":%d,"ok":%d,'
      .. '"errors":{"non-2xx":%d,"socket":%d},"elapsed_secs":%.3f,"throughput":%.1f,'
      .. '"offered_rate":null,"latency":{"count":%d,"p50":%.3f,"p90":%.3f,"p99":%.3f,'
      .. '"p999":%.3f,"max":%.3f}}',
    target, connections, summary.requests, summary.requests - failed,
    errors.status, socket_errors, seconds, summary.requests / seconds, summary.requests,
    ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
    ms(latency:percentile(99.9)), ms(latency.max))
  if out then
    local file = assert(io.open(out, "w"))
    file:write(json, "\n")
    file:close()
  end
  io.write(json, "\n")
end
