-- wrk script for bench/run. One file, several modes, chosen by BENCH_MODE:
--   healthz   GET /healthz (the ceiling)
--   deposit   POST /v1/keys with one OpenSSH Ed25519 public key
--   capture   like deposit, and every code received is appended to $BENCH_CODES/codes-<thread>.txt
--   retrieve  POST /v1/retrievals, each code of $BENCH_CODES used exactly once: thread i of n takes
--             the codes whose line number is i modulo n, and its connections share that queue
--   pair      deposit, then retrieve the code that deposit returned (each code once)
--   xpair     the same across replicas (bench/run --replicas N): one wrk process per replica,
--             replica r's thread i appends the codes it deposits to $BENCH_CODES/xr-r-i.txt and
--             retrieves the codes that replica BENCH_PEER's thread i deposited (reading the peer's
--             file as it grows; bench/run stocks each file with codes deposited on its replica
--             beforehand). Each code is retrieved once, on another replica than the one that made
--             it. Deposits and retrievals alternate, so that every replica deposits as much as it
--             retrieves; a retrieval's turn with no code of the peer's waiting deposits instead
--             ("unpaired", counted).
-- Every non-2xx answer is counted as an error (wrk itself counts only >= 400 and socket errors).
-- done() writes one JSON object to $BENCH_OUT (with BENCH_QUANTILES=1 also the latency at 1,099
-- quantiles, so that bench/run can merge the distributions of several wrk processes).

local mode = os.getenv("BENCH_MODE") or "healthz"
local app_key = os.getenv("BENCH_APP_KEY") or ""
local service_key = os.getenv("BENCH_SERVICE_KEY") or ""
local pubkey = os.getenv("BENCH_PUBKEY") or ""
local codes_dir = os.getenv("BENCH_CODES") or "."
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "2")
local replica = os.getenv("BENCH_REPLICA") or "0"
local peer_replica = os.getenv("BENCH_PEER") or "0"

-- main state: collect the threads so that done() can read their counters
local threads = {}
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- thread state
ok2xx, bad, exhausted, retrieved = 0, 0, 0, 0 -- globals: done() reads them with thread:get
local queue, qhead, qtail = {}, 1, 0 -- codes waiting: queue[qhead..qtail]
local out
local peer, partial = nil, "" -- xpair: the peer's code file, and a line it has only begun
local turn = 0 -- xpair: 1 when the next request is a deposit
unpaired = 0 -- xpair: deposits made on a retrieval's turn (global: done() reads it)
local deposit_req, healthz_req

local function json_escape(s)
  return (s:gsub('\\', '\\\\'):gsub('"', '\\"'))
end

local function retrieval(code)
  return wrk.format("POST", "/v1/retrievals", {
    ["Authorization"] = "Bearer " .. service_key,
    ["Content-Type"] = "application/json",
  }, '{"code":"' .. code .. '"}')
end

function init(args)
  deposit_req = wrk.format("POST", "/v1/keys", {
    ["Authorization"] = "Bearer " .. app_key,
    ["Content-Type"] = "application/json",
  }, '{"public_key":"' .. json_escape(pubkey) .. '","label":"bench"}')
  healthz_req = wrk.format("GET", "/healthz")
  if mode == "capture" then
    out = io.open(codes_dir .. "/codes-" .. (os.getenv("BENCH_TAG") or "x") .. "-" .. id .. ".txt", "w")
  elseif mode == "retrieve" then
    local files = io.popen('ls "' .. codes_dir .. '"')
    local n = 0
    for name in files:lines() do
      for line in io.lines(codes_dir .. "/" .. name) do
        if n % nthreads == id then qtail = qtail + 1; queue[qtail] = line end
        n = n + 1
      end
    end
    files:close()
  elseif mode == "xpair" then
    -- Line-buffered: each code reaches the file in one write, as its line.
    out = io.open(codes_dir .. "/xr-" .. replica .. "-" .. id .. ".txt", "a")
    out:setvbuf("line")
    peer = assert(io.open(codes_dir .. "/xr-" .. peer_replica .. "-" .. id .. ".txt", "r"))
  end
end

-- xpair: queues the whole lines the peer has appended since the last look. (A read at the end
-- of the file returns "" and the next one sees what was appended meanwhile.)
local function poll_peer()
  local s = peer:read("*a")
  if s == nil or s == "" then return end
  s = partial .. s
  local last = 1
  for line, stop in s:gmatch("([^\n]*)\n()") do
    if line ~= "" then qtail = qtail + 1; queue[qtail] = line end
    last = stop
  end
  partial = s:sub(last)
end

function request()
  if mode == "xpair" then
    turn = 1 - turn
    if turn == 1 then return deposit_req end
    if qhead > qtail then poll_peer() end
    local code = queue[qhead]
    if code == nil then
      unpaired = unpaired + 1
      return deposit_req
    end
    queue[qhead] = nil
    qhead = qhead + 1
    return retrieval(code)
  end
  if mode == "healthz" then
    return healthz_req
  elseif mode == "deposit" or mode == "capture" then
    return deposit_req
  elseif mode == "retrieve" then
    local code = queue[qhead]
    if code == nil then
      exhausted = exhausted + 1
      wrk.thread:stop()
      return healthz_req
    end
    queue[qhead] = nil
    qhead = qhead + 1
    return retrieval(code)
  else -- pair: a waiting code is retrieved first, else a new deposit
    local code = queue[qhead]
    if code ~= nil then
      queue[qhead] = nil
      qhead = qhead + 1
      return retrieval(code)
    end
    return deposit_req
  end
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    bad = bad + 1
    if bad <= 3 then io.stderr:write("bench: HTTP " .. status .. ": " .. tostring(body) .. "\n") end
    return
  end
  ok2xx = ok2xx + 1
  if mode == "capture" or mode == "pair" or mode == "xpair" then
    local code = body:match('"code":"(%w+)"')
    if code then
      if mode == "capture" then
        out:write(code, "\n")
      elseif mode == "xpair" then
        out:write(code .. "\n")
      else
        qtail = qtail + 1
        queue[qtail] = code
      end
    elseif body:find('"retrieval_id"', 1, true) then
      retrieved = retrieved + 1
    end
  elseif mode == "retrieve" then
    retrieved = retrieved + 1
  end
end

function done(summary, latency, requests)
  local okc, badc, exh, ret, frc = 0, 0, 0, 0, 0
  for _, t in ipairs(threads) do
    frc = frc + (t:get("unpaired") or 0)
    okc = okc + (t:get("ok2xx") or 0)
    badc = badc + (t:get("bad") or 0)
    exh = exh + (t:get("exhausted") or 0)
    ret = ret + (t:get("retrieved") or 0)
  end
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  local secs = summary.duration / 1e6
  local quantiles = ""
  if os.getenv("BENCH_QUANTILES") == "1" then
    local q = {}
    for i = 1, 999 do q[#q + 1] = string.format("[%.1f,%d]", i / 10, latency:percentile(i / 10)) end
    for i = 1, 99 do q[#q + 1] = string.format("[%.2f,%d]", 99.9 + i / 1000, latency:percentile(99.9 + i / 1000)) end
    q[#q + 1] = string.format("[100,%d]", latency.max)
    quantiles = ',"quantiles_us":[' .. table.concat(q, ",") .. "]"
  end
  local f = io.open(os.getenv("BENCH_OUT"), "w")
  f:write(string.format(
    '{"mode":"%s","seconds":%.3f,"requests":%d,"rps":%.1f,"ok":%d,"non2xx":%d,"socket_errors":%d,' ..
    '"retrieved":%d,"retrieved_per_s":%.1f,"codes_exhausted":%d,"unpaired_deposits":%d,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f%s}\n',
    mode, secs, summary.requests, summary.requests / secs, okc, badc, socket_errors,
    ret, ret / secs, exh, frc,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000, quantiles))
  f:close()
end
