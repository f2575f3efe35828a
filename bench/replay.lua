-- Replays pre-built raw requests: thread i sends the requests of <prefix>-<i>.req in order.
-- Usage: wrk -s replay.lua ... -- <prefix>
-- Each thread walks its own file, so no request repeats within a run unless a file runs out
-- ("wrapped" in the summary). done() prints one JSON line starting with "BENCH_RESULT ".

local threads = {}
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("id", counter)
   table.insert(threads, thread)
end

-- Globals on purpose: done() reads wrapped, statuses and first_error back with thread:get().
local requests, position

function init(args)
   local path = args[1] .. "-" .. id .. ".req"
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   requests = {}
   local at = 1
   while at <= #data do
      local newline = data:find("\n", at, true)
      local length = tonumber(data:sub(at, newline - 1))
      requests[#requests + 1] = data:sub(newline + 1, newline + length)
      at = newline + length + 1
   end
   position, wrapped, statuses = 0, 0, {}
end

function request()
   position = position + 1
   if position > #requests then
      position, wrapped = 1, wrapped + 1
   end
   return requests[position]
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status ~= 200 and first_error == nil then
      first_error = status .. " " .. (body or ""):sub(1, 200)
   end
end

local function json_string(s)
   return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

function done(summary, latency, requests_)
   local codes, wraps, sent, errors = {}, 0, 0, {}
   for _, thread in ipairs(threads) do
      for code, n in pairs(thread:get("statuses") or {}) do
         codes[code] = (codes[code] or 0) + n
      end
      wraps = wraps + (thread:get("wrapped") or 0)
      local e = thread:get("first_error")
      if e then errors[#errors + 1] = json_string(e) end
   end
   local parts = {}
   for code, n in pairs(codes) do parts[#parts + 1] = string.format('"%d": %d', code, n) end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "statuses": {%s}, "wrapped": %d, ' ..
      '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, "non_2xx_3xx": %d, ' ..
      '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p99.9": %d, "max": %d, "mean": %.1f}, ' ..
      '"first_errors": [%s]}\n',
      summary.requests, summary.duration, table.concat(parts, ", "), wraps,
      e.connect, e.read, e.write, e.timeout, e.status,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.max, latency.mean, table.concat(errors, ", ")))
end
