-- wrk script for bench/http: POST /v1/embed with one real text per request.
-- The texts file (one text per line) is named by the environment variable
-- NLPD_BENCH_TEXTS; bench/http writes it from the SST-2 dev sentences.
-- Each wrk thread starts at a different offset and cycles through the texts.
-- done() prints one line "WRK_JSON {...}" that bench/http parses.

local texts = {}
local counter = 0

local function json_string(s)
    s = s:gsub('[%c"\\]', function(c)
        if c == '"' then return '\\"' end
        if c == '\\' then return '\\\\' end
        return string.format('\\u%04x', c:byte())
    end)
    return '"' .. s .. '"'
end

local bodies = {}
local idx = 0

function setup(thread)
    counter = counter + 1
    thread:set("thread_no", counter)
end

function init(args)
    local path = os.getenv("NLPD_BENCH_TEXTS") or "bench/out/http_texts.txt"
    local model = os.getenv("NLPD_BENCH_MODEL") or "minilm"
    for line in io.lines(path) do
        if #line > 0 then
            bodies[#bodies + 1] = '{"text":' .. json_string(line) .. ',"model":"' .. model .. '"}'
        end
    end
    if #bodies == 0 then error("no texts in " .. path) end
    idx = ((thread_no or 1) - 1) * 997 % #bodies
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
end

function request()
    idx = idx % #bodies + 1
    return wrk.format(nil, nil, nil, bodies[idx])
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
        '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
        '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency.max, latency.mean))
end
