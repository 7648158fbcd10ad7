-- lbgen's balancer for nginx HTTP upstreams (issue 12, docs/nginx-runtime.md).
--
-- Called from each upstream's balancer_by_lua_block with the upstream's name. The set comes from
-- lbgen_endpoints (one lua_shared_dict for all workers); each worker keeps the balancing state
-- derived from it (smooth weighted round-robin weights, the hash ring, connection counts) and
-- rebuilds it when the upstream's generation in the dict changes. Same semantics as the nginx
-- directives it replaces, per worker like nginx without a `zone`:
--   roundrobin  smooth weighted round-robin (nginx's algorithm)
--   leastconn   fewest active requests relative to weight (this worker's requests)
--   source      consistent hash of the client address over a ring weighted by weight
--   random      weighted random
-- A connect error or timeout tries the next endpoint (proxy_next_upstream, up to one try per
-- endpoint) and counts against the failed one like max_fails/fail_timeout, in the shared dict
-- `lbgen_failures` (keys expire after fail_timeout). When every endpoint not yet tried is marked
-- failed they are tried anyway (nginx would answer 502 until fail_timeout passes). An upstream
-- with no endpoint answers 503 at once (admit(), in the access phase of the proxying location).
local balancer = require("ngx.balancer")
local store = require("lbgen_endpoints")

local M = {}

local options = { max_fails = 1, fail_timeout = 10 }
local cache = {}   -- name -> {gen=, peers=, total=, ring=, rr=}
local conns = {}   -- name -> "addr:port" -> active requests of this worker (leastconn)

function M.configure(opts)
    for k, v in pairs(opts or {}) do
        options[k] = v
    end
end

local function key(peer)
    return peer.address .. ":" .. peer.port
end

local function build_ring(peers)
    local ring = {}
    for i, peer in ipairs(peers) do
        for point = 1, 20 * peer.weight do
            ring[#ring + 1] = { hash = ngx.crc32_short(key(peer) .. "-" .. point), peer = i }
        end
    end
    table.sort(ring, function(a, b) return a.hash < b.hash end)
    return ring
end

local function build(name, set, gen)
    local peers, total = {}, 0
    for _, e in ipairs(set.endpoints) do
        if e.weight > 0 then  -- weight 0 (drained): no new requests
            -- set_current_peer wants IPv6 literals in brackets
            local host = e.address:find(":", 1, true) and "[" .. e.address .. "]" or e.address
            peers[#peers + 1] = { address = e.address, host = host, port = e.port, weight = e.weight, current = 0 }
            total = total + e.weight
        end
    end
    local up = { gen = gen, balance = set.balance, peers = peers, total = total }
    if set.balance == "source" then
        up.ring = build_ring(peers)
    end
    conns[name] = conns[name] or {}
    cache[name] = up
    return up
end

-- This worker's state for `name`, rebuilt when the shared set changed.
local function upstream(name)
    local up = cache[name]
    local gen = store.generation(name)
    if up and up.gen == gen then
        return up
    end
    local set, current = store.get(name)
    if not set then
        return nil
    end
    return build(name, set, current)
end

local function failed(name, peer)
    local fails = ngx.shared.lbgen_failures
    return options.max_fails > 0 and fails ~= nil
        and (fails:get(name .. "|" .. key(peer)) or 0) >= options.max_fails
end

local function mark_failed(name, peer)
    local fails = ngx.shared.lbgen_failures
    if fails and options.max_fails > 0 then
        fails:incr(name .. "|" .. key(peer), 1, 0, options.fail_timeout)
    end
end

-- Peers that may take this try: not tried yet, and not marked failed unless all of them are.
-- When every peer was tried, any may be tried again: nginx grants an extra try when a cached
-- (keep-alive) upstream connection turns out closed, and expects the balancer to find a peer.
local function candidates(name, up, tried)
    local fresh, live, all = {}, {}, {}
    for i, peer in ipairs(up.peers) do
        all[i] = true
        if not tried[key(peer)] then
            fresh[i] = true
            if not failed(name, peer) then
                live[i] = true
            end
        end
    end
    return next(live) and live or next(fresh) and fresh or all
end

local function pick_roundrobin(up, allowed)
    local best, total = nil, 0
    for i, peer in ipairs(up.peers) do
        if allowed[i] then
            peer.current = peer.current + peer.weight
            total = total + peer.weight
            if not best or peer.current > up.peers[best].current then
                best = i
            end
        end
    end
    if best then
        up.peers[best].current = up.peers[best].current - total
    end
    return best
end

local function pick_leastconn(name, up, allowed)
    local best, best_load, active = nil, nil, conns[name]
    up.rr = (up.rr or 0) % #up.peers + 1  -- ties go round the peers
    for n = 0, #up.peers - 1 do
        local i = (up.rr + n - 1) % #up.peers + 1
        if allowed[i] then
            local peer = up.peers[i]
            local load = (active[key(peer)] or 0) / peer.weight
            if not best or load < best_load then
                best, best_load = i, load
            end
        end
    end
    return best
end

local function pick_source(up, allowed)
    local ring = up.ring
    local hash = ngx.crc32_short(ngx.var.remote_addr or "")
    local low, high = 1, #ring
    while low < high do  -- the first point at or after the client's hash (wrapping round)
        local mid = math.floor((low + high) / 2)
        if ring[mid].hash < hash then low = mid + 1 else high = mid end
    end
    for n = 0, #ring - 1 do
        local point = ring[(low + n - 1) % #ring + 1]
        if allowed[point.peer] then
            return point.peer
        end
    end
end

local function pick_random(up, allowed)
    local total = 0
    for i, peer in ipairs(up.peers) do
        if allowed[i] then total = total + peer.weight end
    end
    local r = math.random() * total
    for i, peer in ipairs(up.peers) do
        if allowed[i] then
            r = r - peer.weight
            if r < 0 then return i end
        end
    end
    return next(allowed)
end

local function pick(name, up, allowed)
    local balance = up.balance
    if balance == "leastconn" then return pick_leastconn(name, up, allowed) end
    if balance == "source" then return pick_source(up, allowed) end
    if balance == "random" then return pick_random(up, allowed) end
    return pick_roundrobin(up, allowed)
end

local function release(name, peer_key)
    local active = conns[name]
    if active and peer_key and (active[peer_key] or 0) > 0 then
        active[peer_key] = active[peer_key] - 1
    end
end

-- A retry: the previous try's endpoint is released, and marked failed on a connect error.
local function after_failure(name, state)
    local status = balancer.get_last_failure()
    if status == "failed" then
        mark_failed(name, state.peer)
    end
    release(name, key(state.peer))
end

-- init_worker_by_lua_block: workers forked from one master must not share a random sequence.
function M.init_worker()
    math.randomseed(ngx.now() * 1000 + ngx.worker.pid())
end

-- access_by_lua_block { require("lbgen_balancer").admit("web") }: an upstream with no endpoint
-- answers 503 before proxying (the balancer phase cannot choose the status: it would be a 500).
function M.admit(name)
    local up = upstream(name)
    if not up or #up.peers == 0 then
        return ngx.exit(503)
    end
end

-- balancer_by_lua_block { require("lbgen_balancer").balance("web") }
function M.balance(name)
    local up = upstream(name)
    if not up or #up.peers == 0 then  -- emptied since admit(): as nginx's "no live upstreams"
        return ngx.exit(502)
    end
    local ctx = ngx.ctx
    local state = ctx.lbgen
    if state == nil then
        state = { name = name, tried = {} }
        ctx.lbgen = state
        if #up.peers > 1 then
            balancer.set_more_tries(#up.peers - 1)
        end
    else
        after_failure(name, state)
    end
    local i = pick(name, up, candidates(name, up, state.tried))
    if not i then
        return ngx.exit(502)
    end
    local peer = up.peers[i]
    state.tried[key(peer)], state.peer = true, peer
    local active = conns[name]
    active[key(peer)] = (active[key(peer)] or 0) + 1
    local ok, err = balancer.set_current_peer(peer.host, peer.port)
    if not ok then
        ngx.log(ngx.ERR, "lbgen balancer: ", name, ": ", key(peer), ": ", err)
        return ngx.exit(502)
    end
end

-- log_by_lua_block: the request is over, its endpoint has one request fewer (leastconn).
function M.log()
    local state = ngx.ctx.lbgen
    if state and state.peer then
        release(state.name, key(state.peer))
    end
end

return M
