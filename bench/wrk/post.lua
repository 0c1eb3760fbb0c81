-- wrk script: POST one body to /invocations on every connection; prints the figures as one JSON line.
-- WRK_BODY: file with the body; WRK_PATH (default /invocations), WRK_CONTENT_TYPE and WRK_ACCEPT (default text/csv);
-- WRK_REQUESTS_PER_THREAD: stop each thread after that many responses (0 = run for -d); each stopped thread then
-- creates a file in WRK_DONE_DIR, and the caller ends wrk with SIGINT (wrk prints its figures on SIGINT).
local file = assert(io.open(os.getenv("WRK_BODY"), "rb"))
local body = file:read("*a")
file:close()
local limit = tonumber(os.getenv("WRK_REQUESTS_PER_THREAD") or "0")

wrk.method = "POST"
wrk.path = os.getenv("WRK_PATH") or "/invocations"
wrk.body = body
wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "text/csv"
wrk.headers["Accept"] = os.getenv("WRK_ACCEPT") or "text/csv"

local next_id = 0
function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
end

if limit > 0 then
   local count = 0
   function response(status, headers, body)
      count = count + 1
      if count == limit then
         io.open(os.getenv("WRK_DONE_DIR") .. "/" .. id, "w"):close()
         wrk.thread:stop()
      end
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
      '"status_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, ' ..
      '"max_us": %d, "mean_us": %.1f}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.max, latency.mean))
end
