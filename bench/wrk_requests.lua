-- wrk script for bench/ingest.py: cycles through pre-generated, pre-signed requests and counts
-- responses by status and by body ("accepted" / "duplicate"). No crypto, no JSON work here.
--
--   wrk ... -s bench/wrk_requests.lua http://127.0.0.1:PORT -- FILE PATH HOST NTHREADS
--
-- FILE is written by bench/payloads.py (per request "<hlen> <blen>\n", header lines, body), or
-- "-" for a bodiless GET of PATH. Thread k of NTHREADS takes requests k, k+N, k+2N, ... so no two
-- threads send the same unique webhook. "wrapped" counts passes beyond the end of the file
-- (every request after a wrap is a duplicate, so bench/ingest.py sizes the file to avoid it).

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

function init(args)
  local file, path, host, nthreads = args[1], args[2], args[3], tonumber(args[4])
  reqs = {}
  statuses = {}
  accepted, duplicate, sent, wrapped = 0, 0, 0, 0
  if file == "-" then
    reqs[1] = "GET " .. path .. " HTTP/1.1\r\nHost: " .. host .. "\r\n\r\n"
  else
    local f = assert(io.open(file, "rb"))
    local i = 0
    while true do
      local line = f:read("*l")
      if not line then break end
      local hlen, blen = line:match("^(%d+) (%d+)$")
      hlen, blen = tonumber(hlen), tonumber(blen)
      if i % nthreads == tid then
        local head = f:read(hlen)
        local body = f:read(blen)
        reqs[#reqs + 1] = "POST " .. path .. " HTTP/1.1\r\nHost: " .. host .. "\r\n" .. head
          .. "Content-Length: " .. blen .. "\r\n\r\n" .. body
      else
        f:seek("cur", hlen + blen)
      end
      i = i + 1
    end
    f:close()
  end
  n = #reqs
  idx = 0
  io.stderr:write("READY\n") -- unbuffered: bench/ingest.py starts its CPU meters now
end

function request()
  idx = idx + 1
  if idx > n then
    idx = 1
    wrapped = wrapped + 1
  end
  sent = sent + 1
  return reqs[idx]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 200 and body then
    if body:find("accepted", 1, true) then
      accepted = accepted + 1
    elseif body:find("duplicate", 1, true) then
      duplicate = duplicate + 1
    end
  end
end

function done(summary, latency, requests)
  local acc, dup, snt, wrp = 0, 0, 0, 0
  local st, per_thread = {}, {}
  for _, t in ipairs(threads) do
    acc = acc + t:get("accepted")
    dup = dup + t:get("duplicate")
    snt = snt + t:get("sent")
    per_thread[#per_thread + 1] = tostring(t:get("sent"))
    wrp = wrp + t:get("wrapped")
    for k, v in pairs(t:get("statuses")) do
      st[k] = (st[k] or 0) + v
    end
  end
  local parts = {}
  for k, v in pairs(st) do
    parts[#parts + 1] = string.format('"%d":%d', k, v)
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us":%d,"requests":%d,"accepted":%d,"duplicate":%d,"sent":%d,'
      .. '"sent_per_thread":[%s],"wrapped":%d,"statuses":{%s},"errors":{"connect":%d,"read":%d,"write":%d,'
      .. '"status":%d,"timeout":%d},"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,'
      .. '"max":%d,"mean":%.1f}}\n',
    summary.duration, summary.requests, acc, dup, snt, table.concat(per_thread, ","), wrp, table.concat(parts, ","),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
