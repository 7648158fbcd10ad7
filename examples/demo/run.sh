#!/usr/bin/env bash
# lbgen end to end on one machine (README: `make demo`). Loopback only; everything in /tmp/lbgen-demo.
#
#   etcd ─┬─ lbgen agent  (Docker host "demo-host": registers containers on a lease)
#         └─ lbgen watch  (LB node: renders nginx + HAProxy, validates, swaps, reloads)
#   lbgen deploy         (starts 3 replicas of a busybox web service, rolls them)
#
# Steps: start etcd and dockerd → build the image → start the agent and the watcher → deploy 3
# replicas → traffic through both LBs → rolling update under load → kill a replica → status.
# Everything it started is stopped at the end (DEMO_KEEP=1 keeps it running; run.sh stop ends it).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
LBGEN=${LBGEN:-$root/.venv/bin/lbgen}
DEMO=/tmp/lbgen-demo
ETCD=etcd://127.0.0.1:23790
export DOCKER_HOST=unix://$DEMO/docker.sock
export LBGEN_REGISTRY=$ETCD

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "demo: timed out waiting for $what" >&2; return 1; fi
    sleep 0.2
  done
}

stop_pidfile() {  # stop_pidfile FILE [SECONDS]
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((${2:-5} * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

stop_all() {
  step "Stopping everything the demo started"
  if [ -S "$DEMO/docker.sock" ]; then
    docker ps -aq --filter label=lbgen.deploy.project=demo 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
  fi
  for name in watch agent; do stop_pidfile "$DEMO/$name.pid"; done
  stop_pidfile "$DEMO/lb/nginx.pid"
  stop_pidfile "$DEMO/lb/haproxy.pid"
  stop_pidfile "$DEMO/dockerd.pid" 15
  pkill -f "containerd --config $DEMO/exec" 2>/dev/null || true
  umount "$DEMO/exec/netns/default" 2>/dev/null || true
  stop_pidfile "$DEMO/etcd.pid"
  say "stopped (logs kept in $DEMO/*.log)"
}

if [ "${1:-}" = stop ]; then stop_all; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "demo: run as root (dockerd needs it)" >&2; exit 1; }

stop_all >/dev/null 2>&1 || true  # a previous run's leftovers
rm -rf "$DEMO/etcd" "$DEMO/lb" "$DEMO/load.stop"
mkdir -p "$DEMO/lb" "$DEMO/logs"
[ "${DEMO_KEEP:-0}" = 1 ] || trap stop_all EXIT

step "1. Start etcd (127.0.0.1:23790) and a private dockerd ($DEMO/docker.sock)"
etcd --name demo --data-dir "$DEMO/etcd" \
  --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
  --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
  --initial-cluster demo=http://127.0.0.1:23800 >"$DEMO/etcd.log" 2>&1 &
echo $! >"$DEMO/etcd.pid"
dockerd --data-root "$DEMO/data" --exec-root "$DEMO/exec" -H "$DOCKER_HOST" --pidfile "$DEMO/dockerd.pid" \
  --bridge=none --iptables=false --ip-masq=false >"$DEMO/dockerd.log" 2>&1 &
wait_for 30 etcd "$LBGEN" registry ls
wait_for 60 dockerd docker version
say "etcd and dockerd are up"

step "2. Build the backend image FROM scratch (busybox httpd + a HEALTHCHECK)"
"$here/build-image.sh" lbgen-demo:1
"$here/build-image.sh" lbgen-demo:2
docker images --format '   {{.Repository}}:{{.Tag}}  {{.Size}}' | grep lbgen-demo

step "3. Describe the service: web is exposed on port 18080 (spec in etcd)"
"$LBGEN" registry put /lbgen/services/web/spec '{"listen": 18080, "mode": "http", "health_check": "/health"}'

step "4. Start the agent (Docker host 'demo-host') and render the first LB configs"
"$LBGEN" agent --node demo-host --host-ip 127.0.0.1 --ttl 10 --metrics-addr 127.0.0.1:29101 \
  >"$DEMO/agent.log" 2>&1 &
echo $! >"$DEMO/agent.pid"
"$LBGEN" render -c "$here/lbgen.yaml"
nginx -c "$DEMO/lb/nginx.conf" -p "$DEMO/lb"
haproxy -W -S "$DEMO/lb/haproxy-master.sock" -D -f "$DEMO/lb/haproxy.cfg"  # pid file: set in the config
"$LBGEN" watch -c "$here/lbgen.yaml" --metrics-addr 127.0.0.1:29102 >"$DEMO/watch.log" 2>&1 &
echo $! >"$DEMO/watch.pid"
wait_for 20 "the watcher" curl -fs http://127.0.0.1:29102/healthz
say "nginx on 127.0.0.1:18080, HAProxy on 127.0.0.2:18080, watcher metrics on 127.0.0.1:29102"

step "5. Deploy 3 replicas (examples/deploy.yaml)"
"$LBGEN" deploy apply "$root/examples/deploy.yaml"

show_traffic() {
  for lb in 127.0.0.1 127.0.0.2; do
    printf '   through %s:18080 →' "$lb"
    for _ in 1 2 3 4 5 6; do printf '  %s' "$(curl -fsS --max-time 2 "http://$lb:18080/" | sed 's/^replica=[^ ]* //')"; done
    echo
  done
}
step "6. Traffic through both LBs is balanced across the replicas"
wait_for 20 "3 served replicas" bash -c "curl -fs http://127.0.0.1:29102/metrics | grep -q 'served_endpoints{service=\"web\"} 3.0'"
show_traffic

step "7. Rolling update to lbgen-demo:2 under load (a new connection per request)"
sed -e 's/image: lbgen-demo:1/image: lbgen-demo:2/' -e 's/VERSION: "1"/VERSION: "2"/' "$root/examples/deploy.yaml" >"$DEMO/deploy-v2.yaml"
( ok=0; failed=0
  while [ ! -f "$DEMO/load.stop" ]; do
    if curl -fs --max-time 2 -o /dev/null http://127.0.0.1:18080/; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
  done
  echo "$ok $failed" >"$DEMO/load.result" ) &
load=$!
nginx_workers() { pgrep -P "$(cat "$DEMO/lb/nginx.pid")" | sort -n | tr '\n' ' '; }
workers_before=$(nginx_workers)
"$LBGEN" deploy apply "$DEMO/deploy-v2.yaml"
touch "$DEMO/load.stop"; wait "$load"
read -r ok failed <"$DEMO/load.result"
say "requests through nginx during the update: $ok ok, $failed failed"
# runtime: true (lbgen.yaml): nginx's endpoint changes went through its Lua balancer, not reloads
say "nginx workers before the update: $workers_before; after: $(nginx_workers)"
say "$(curl -fs http://127.0.0.1:29102/metrics | grep -E '^lbgen_watcher_(runtime_updates|runtime_fallbacks|reloads)_total\{target="nginx"\}' | tr '\n' ' ')"
show_traffic

step "8. Kill a replica: its key leaves etcd, the LBs route around it"
victim=$(docker ps -q --filter label=lbgen.deploy.project=demo | head -n 1)
say "removing $(docker inspect -f '{{.Name}}' "$victim" | tr -d /) (docker rm -f, as if its host lost it)"
docker rm -f "$victim" >/dev/null
wait_for 20 "2 served replicas" bash -c "curl -fs http://127.0.0.1:29102/metrics | grep -q 'served_endpoints{service=\"web\"} 2.0'"
show_traffic

step "9. lbgen status"
# An LB node publishes its applied revision at most once a second: give it that long to report.
wait_for 10 "the LB node to report the latest revision" "$LBGEN" status --check || true
"$LBGEN" status || true

if [ "${DEMO_KEEP:-0}" = 1 ]; then
  step "Left running (DEMO_KEEP=1). Stop it with: $0 stop"
  trap - EXIT
fi
