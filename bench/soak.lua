-- wrk script for bench/soak: mixed traffic over nlpd's endpoints, with every
-- response checked against what its request must get.
--
-- The plan file (environment variable NLPD_SOAK_PLAN; bench/soak writes it) has one
-- request a line, tab-separated:
--     kind  method  path  expected-status  expected-substring  body
-- (body: one line of JSON, possibly deliberately malformed; may be empty for GET).
-- Each wrk thread walks the plan from its own offset, round and round. Every request
-- carries "X-Request-Id: soak-<plan line>-<thread>-<n>", which nlpd echoes on every
-- response (errors included), so response() knows which request a response answers
-- even with several connections per thread. A response is "ok" when its status is the
-- expected one and its body contains the expected substring (e.g. '"embedding"', or
-- the error code '"model_not_found"'); anything else is "unexpected".
-- Counts are per thread (each wrk thread has its own Lua state); done() gathers them
-- with thread:get (as wrk's scripts/setup.lua does) and prints one line
-- "WRK_JSON {...}" that bench/soak parses.

local plan = {}
local kinds = {}        -- kind names in first-seen order
local threads = {}
local counter = 0
local idx = 0
local seq = 0
local headers = {}

-- Per-thread counts, read by done() through thread:get("counts"). A flat table
-- ("kind\tfield" -> number, field: sent, ok, unexpected or s<status>): wrk 4.1's
-- thread:get copies one level of table only (a nested table crashes it).
counts = {}

local function bump(kind, field)
    local k = kind .. "\t" .. field
    counts[k] = (counts[k] or 0) + 1
end

function setup(thread)
    counter = counter + 1
    thread:set("thread_no", counter)
    table.insert(threads, thread)
end

local function split_tabs(line)
    local f = {}
    local start = 1
    for _ = 1, 5 do
        local t = string.find(line, "\t", start, true)
        if not t then return nil end
        f[#f + 1] = string.sub(line, start, t - 1)
        start = t + 1
    end
    f[#f + 1] = string.sub(line, start)
    return f
end

local function load_plan()
    local path = os.getenv("NLPD_SOAK_PLAN") or "bench/out/soak_plan.tsv"
    for line in io.lines(path) do
        if #line > 0 then
            local f = split_tabs(line)
            if not f then error("bad plan line in " .. path .. ": " .. line:sub(1, 80)) end
            local body = f[6]
            if body == "" then body = nil end
            plan[#plan + 1] = {kind = f[1], method = f[2], path = f[3],
                               status = tonumber(f[4]), want = f[5], body = body}
        end
    end
    if #plan == 0 then error("empty plan " .. path) end
end

function init(args)
    load_plan()
    for _, p in ipairs(plan) do counts[p.kind .. "\tsent"] = 0 end
    idx = ((thread_no or 1) - 1) * 997 % #plan
end

function request()
    idx = idx % #plan + 1
    seq = seq + 1
    local p = plan[idx]
    bump(p.kind, "sent")
    headers = {["Host"] = wrk.host,
               ["X-Request-Id"] = "soak-" .. idx .. "-" .. (thread_no or 1) .. "-" .. seq}
    if p.body then headers["Content-Type"] = "application/json" end
    return wrk.format(p.method, p.path, headers, p.body)
end

function response(status, hdrs, body)
    local rid = hdrs["X-Request-Id"] or hdrs["x-request-id"]
    if not rid then
        for k, v in pairs(hdrs) do
            if string.lower(k) == "x-request-id" then rid = v end
        end
    end
    local i = rid and tonumber(string.match(rid, "^soak%-(%d+)%-"))
    local p = i and plan[i]
    local kind = p and p.kind or "unmatched"  -- unmatched: no request id of ours
    if p and status == p.status and
            (p.want == "" or (body and string.find(body, p.want, 1, true))) then
        bump(kind, "ok")
    else
        bump(kind, "unexpected")
    end
    bump(kind, "s" .. status)
end

local function json_str(x)
    return '"' .. string.gsub(tostring(x), '[%c"\\]', function(c)
        return string.format("\\u%04x", c:byte())
    end) .. '"'
end

function done(summary, latency, requests)
    local agg = {}
    local order = {}
    for _, thread in ipairs(threads) do
        for key, n in pairs(thread:get("counts") or {}) do
            local kind, field = string.match(key, "^(.*)\t(.*)$")
            local a = agg[kind]
            if not a then
                a = {sent = 0, ok = 0, unexpected = 0, statuses = {}}
                agg[kind] = a
                order[#order + 1] = kind
            end
            if string.sub(field, 1, 1) == "s" and field ~= "sent" then
                local code = string.sub(field, 2)
                a.statuses[code] = (a.statuses[code] or 0) + n
            else
                a[field] = a[field] + n
            end
        end
    end
    table.sort(order)
    local parts = {}
    for _, kind in ipairs(order) do
        local a = agg[kind]
        local st = {}
        for code, n in pairs(a.statuses) do st[#st + 1] = json_str(code) .. ": " .. n end
        parts[#parts + 1] = string.format('%s: {"sent": %d, "ok": %d, "unexpected": %d, "statuses": {%s}}',
            json_str(kind), a.sent, a.ok, a.unexpected, table.concat(st, ", "))
    end
    local e = summary.errors
    io.write(string.format(
        'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
        '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
        '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}, "kinds": {%s}}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency.max, latency.mean, table.concat(parts, ", ")))
end
