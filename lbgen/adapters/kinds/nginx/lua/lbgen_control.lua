-- lbgen's control API for nginx (issue 12, docs/nginx-runtime.md), served by a `server` that
-- listens only on a unix socket (never on a listener the public side reaches):
--   GET /endpoints[?upstream=a&upstream=b]  -> {"version": v, "upstreams": {name: set}}
--   PUT /endpoints  {"version": v, "upstreams": {name: set}}  -> {"version": v, "updated": n}
-- where set = {"balance": "roundrobin|leastconn|source|random",
--              "endpoints": [{"address": IP, "port": N, "weight": N}, ...]}.
-- A PUT replaces the sets of the upstreams it names (each one declared by the running config),
-- after checking every value; any error answers 4xx with {"error": "..."} and changes nothing.
local cjson = require("cjson.safe")
local store = require("lbgen_endpoints")

local M = {}

local function reply(status, body)
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    ngx.say(cjson.encode(body))
    return ngx.exit(status)
end

local function wanted(args)
    local names = args.upstream
    if names == nil then
        return store.names()
    end
    local set = {}
    for _, name in ipairs(type(names) == "table" and names or { names }) do
        set[tostring(name)] = true
    end
    return set
end

local function read()
    local args = ngx.req.get_uri_args(1000)
    local declared, upstreams = store.names(), {}
    for name in pairs(wanted(args)) do
        local set = declared[name] and store.get(name)
        if not set then
            return reply(404, { error = "no upstream " .. name:sub(1, 100) .. " in the running config" })
        end
        upstreams[name] = set
    end
    return reply(200, { version = store.version(), upstreams = upstreams })
end

local function write()
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if body == nil then  -- larger than client_body_buffer_size, or empty
        return reply(400, { error = "no body in memory (empty, or larger than the buffer)" })
    end
    local request = cjson.decode(body)
    if type(request) ~= "table" then
        return reply(400, { error = "the body is not a JSON object" })
    end
    local ok, err = store.set(request.version, request.upstreams)
    if not ok then
        local status = err:find("^no upstream ") and 404 or 400
        return reply(status, { error = err })
    end
    local updated = 0
    for _ in pairs(request.upstreams) do
        updated = updated + 1
    end
    return reply(200, { version = request.version, updated = updated })
end

-- content_by_lua_block { require("lbgen_control").serve() }
function M.serve()
    if ngx.var.uri ~= "/endpoints" then
        return reply(404, { error = "unknown path" })
    end
    local method = ngx.req.get_method()
    if method == "GET" then
        return read()
    end
    if method == "PUT" then
        return write()
    end
    return reply(405, { error = "GET or PUT" })
end

return M
