-- wrk script of the lookup benchmark: GET /order/<random id from a file><query>.
-- wrk -t1 -c16 -d10s -s bench/wrk_lookup.lua http://127.0.0.1:8081 -- ids.txt '?nocache=1'
-- Prints one line `BENCH-JSON {...}` with the counts and latency percentiles (microseconds).

local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function init(args)
  ids = {}
  for line in io.lines(args[1]) do
    ids[#ids + 1] = line
  end
  query = args[2] or ""
  math.randomseed(os.time() * 1000 + (thread_number or 0))
end

function request()
  return wrk.format("GET", "/order/" .. ids[math.random(#ids)] .. query)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests": %d, "duration_us": %d, "errors_connect": %d, "errors_read": %d, ' ..
    '"errors_write": %d, "errors_timeout": %d, "non_2xx": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
