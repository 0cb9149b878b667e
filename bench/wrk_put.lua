-- wrk script: PUT /images/<name> with a distinct name for every request (bench/wrk.py runs it).
--
--   WRK_BODY=/tmp/body.png WRK_TAG=run1 [WRK_TOKEN=...] \
--     wrk -t2 -c10 -d8s --latency -s bench/wrk_put.lua http://127.0.0.1:7001
--
-- Names: wrk-<tag>-<thread>-<n>.png. The body is read once per thread from WRK_BODY; with
-- WRK_TOKEN set, every request carries "Authorization: Bearer <token>". done() prints one line,
-- "WRK_JSON {...}": requests (responses), ok (2xx), duration_us, errors (socket errors,
-- timeouts, status = responses that were not 2xx), latency percentiles (microseconds).

local threads = {}
local next_id = 1

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   local path = os.getenv("WRK_BODY") or args[1]
   local f = assert(io.open(path, "rb"), "cannot open the body file " .. tostring(path))
   body = f:read("*a")
   f:close()
   tag = os.getenv("WRK_TAG") or args[2] or "run"
   token = os.getenv("WRK_TOKEN")
   if token == "" then token = nil end
   n = 0
   ok = 0
end

function request()
   n = n + 1
   local headers = {["Content-Type"] = "image/png"}
   if token then headers["Authorization"] = "Bearer " .. token end
   local name = string.format("wrk-%s-%d-%d.png", tag, id, n)
   return wrk.format("PUT", "/images/" .. name, headers, body)
end

function response(status, headers, body)
   if status >= 200 and status < 300 then ok = ok + 1 end
end

function done(summary, latency, requests)
   local total_ok = 0
   for _, thread in ipairs(threads) do
      total_ok = total_ok + (thread:get("ok") or 0)
   end
   local e = summary.errors
   local mean = summary.requests > 0 and latency.mean or 0
   local fmt = '{"requests": %d, "ok": %d, "duration_us": %d, "errors": {"connect": %d, '
      .. '"read": %d, "write": %d, "timeout": %d, "status": %d}, "latency_us": {"p50": %d, '
      .. '"p99": %d, "mean": %.1f, "max": %d}}'
   io.write("WRK_JSON ", fmt:format(summary.requests, total_ok, summary.duration, e.connect,
      e.read, e.write, e.timeout, summary.requests - total_ok, latency:percentile(50),
      latency:percentile(99), mean, latency.max), "\n")
end
