-- lbgen's endpoint store for nginx (issue 12, docs/nginx-runtime.md).
--
-- The endpoint sets of the HTTP upstreams live in the lua_shared_dict `lbgen_endpoints`, so every
-- worker balances over the same set. They come from two places only:
--   * the rendered nginx.conf itself: init_by_lua hands `loader()` the JSON lines lbgen embedded
--     in the config, at every start and reload (the file on disk is what runs);
--   * the control API (lbgen_control.lua), which replaces the sets of some upstreams at runtime
--     after lbgen has written the same sets into that file.
-- Keys: `version` (lbgen's version of the whole block), `names` (JSON array of the upstreams the
-- config declares), `u:<name>` (the upstream's canonical JSON), `g:<name>` (a generation number
-- that changes with every write of `u:<name>`: workers rebuild their local state when it does).
local cjson = require("cjson.safe")

local M = {}

local DICT = "lbgen_endpoints"
local BALANCES = { roundrobin = true, leastconn = true, source = true, random = true }
local MAX_ENDPOINTS = 10000
local MAX_WEIGHT = 256
local MAX_VERSION = 64

local function dict()
    local d = ngx.shared[DICT]
    if not d then
        error("lua_shared_dict " .. DICT .. " is not declared")
    end
    return d
end

-- An IP literal nginx can connect to without a resolver (host names never reach the Lua path).
local function is_ip(address)
    if type(address) ~= "string" or #address < 2 or #address > 45 then
        return false
    end
    if address:find("^%d+%.%d+%.%d+%.%d+$") then
        return true
    end
    return address:find(":", 1, true) ~= nil and address:find("^[%x:.]+$") ~= nil
end

local function is_int(value, low, high)
    return type(value) == "number" and value == math.floor(value) and value >= low and value <= high
end

-- The endpoint as stored, or nil and why not.
local function check_endpoint(e, i)
    if type(e) ~= "table" then
        return nil, "endpoint " .. i .. ": not an object"
    end
    if not is_ip(e.address) then
        return nil, "endpoint " .. i .. ": address is not an IP literal"
    end
    if not is_int(e.port, 1, 65535) then
        return nil, "endpoint " .. i .. ": port is not an integer in 1..65535"
    end
    local weight = e.weight == nil and 1 or e.weight
    if not is_int(weight, 0, MAX_WEIGHT) then
        return nil, "endpoint " .. i .. ": weight is not an integer in 0.." .. MAX_WEIGHT
    end
    return { address = e.address, port = e.port, weight = weight }
end

-- An upstream's set in canonical form ({balance=..., endpoints={...}}), or nil and why not.
function M.check_upstream(name, up)
    if type(up) ~= "table" then
        return nil, name .. ": not an object"
    end
    if not BALANCES[up.balance] then
        return nil, name .. ": balance is not roundrobin, leastconn, source or random"
    end
    local endpoints = up.endpoints
    if type(endpoints) ~= "table" or #endpoints > MAX_ENDPOINTS then
        return nil, name .. ": endpoints is not an array of at most " .. MAX_ENDPOINTS
    end
    local checked = {}
    for i, e in ipairs(endpoints) do
        local ok, err = check_endpoint(e, i)
        if not ok then
            return nil, name .. ": " .. err
        end
        checked[i] = ok
    end
    return { balance = up.balance, endpoints = setmetatable(checked, cjson.empty_array_mt) }
end

function M.check_version(version)
    return type(version) == "string" and #version >= 1 and #version <= MAX_VERSION
        and version:find("^[%w._:-]+$") ~= nil
end

-- Store the sets (name -> canonical set); the version last, so a reader that sees the new version
-- sees every set it covers. safe_set: a full dict refuses the write rather than evicting a set.
local function store(sets, version)
    local d = dict()
    for name, up in pairs(sets) do
        local ok, err = d:safe_set("u:" .. name, cjson.encode(up))
        if not ok then
            return nil, "storing " .. name .. ": " .. err
        end
        local gen, gerr = d:incr("gen", 1, 0)
        if not gen then
            return nil, "storing " .. name .. ": " .. gerr
        end
        d:safe_set("g:" .. name, gen)
    end
    local ok, err = d:safe_set("version", version)
    if not ok then
        return nil, "storing the version: " .. err
    end
    return true
end

-- Declared upstreams (name -> true), as the running config has them.
function M.names()
    local list = cjson.decode(dict():get("names") or "[]") or {}
    local set = {}
    for _, name in ipairs(list) do
        set[name] = true
    end
    return set
end

-- One line of the config's block: the version line first, then upstreams; an upstream whose
-- endpoints did not fit one line (nginx's 4 KB limit per Lua string) continues on the next ones.
local function add_line(block, line)
    local item = cjson.decode(line)
    if type(item) ~= "table" then
        error("lbgen endpoint block: a line is not JSON: " .. line:sub(1, 100))
    end
    if block.version == nil then
        if not M.check_version(item.version) then
            error("lbgen endpoint block: the first line is not a valid version")
        end
        block.version = item.version
        return
    end
    local name, up = tostring(item.name), block.sets[item.name]
    if up then  -- a continuation: more endpoints of the same upstream
        for _, e in ipairs(type(item.endpoints) == "table" and item.endpoints or {}) do
            up.endpoints[#up.endpoints + 1] = e
        end
    else
        block.sets[name] = { balance = item.balance, endpoints = item.endpoints }
        block.names[#block.names + 1] = name
    end
end

-- Check and store a whole block; any invalid value is an error: nginx then refuses to start or
-- to reload (`nginx -t` does not run init_by_lua: lbgen validated the values before rendering).
local function load(block)
    if block.version == nil then
        error("lbgen endpoint block: no version line")
    end
    for name, up in pairs(block.sets) do
        local checked, err = M.check_upstream(name, up)
        if not checked then
            error("lbgen endpoint block: " .. err)
        end
        block.sets[name] = checked
    end
    local ok, err = store(block.sets, block.version)
    if not ok then
        error("lbgen endpoint block: " .. err)
    end
    local d = dict()
    for old in pairs(M.names()) do
        if not block.sets[old] then  -- an upstream the previous config had: its set goes with it
            d:delete("u:" .. old)
            d:delete("g:" .. old)
        end
    end
    d:set("names", cjson.encode(setmetatable(block.names, cjson.empty_array_mt)))
end

-- init_by_lua_block: `local add = loader()`, then `add[=[json]=]` per line of the block (in
-- functions of at most 20,000 lines: LuaJIT's limit of constants per function), then `add()`
-- loads it into the shared dict (at every start and reload: the file is what runs).
function M.loader()
    local block = { sets = {}, names = {} }
    return function(line)
        if line == nil then
            return load(block)
        end
        add_line(block, line)
    end
end

-- The control API's write: replace the sets of some declared upstreams, then the version.
function M.set(version, upstreams)
    if not M.check_version(version) then
        return nil, "version is not 1-64 characters of [A-Za-z0-9._:-]"
    end
    if type(upstreams) ~= "table" then
        return nil, "upstreams is not an object"
    end
    local declared, sets = M.names(), {}
    for name, up in pairs(upstreams) do
        if not declared[name] then
            return nil, "no upstream " .. tostring(name):sub(1, 100) .. " in the running config"
        end
        local checked, err = M.check_upstream(name, up)
        if not checked then
            return nil, err
        end
        sets[name] = checked
    end
    return store(sets, version)
end

-- The stored set of one upstream (decoded) and its generation, or nil.
function M.get(name)
    local d = dict()
    local raw = d:get("u:" .. name)
    if raw == nil then
        return nil
    end
    return cjson.decode(raw), d:get("g:" .. name)
end

function M.generation(name)
    return dict():get("g:" .. name)
end

function M.version()
    return dict():get("version")
end

return M
