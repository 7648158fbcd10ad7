#!/usr/bin/env bash
# Installs the Debian 12 packages lbgen's demo and tests run for real (etcd, nginx, haproxy, dockerd,
# busybox for the test image, python3-venv, chromium and its driver for the dashboard's browser test;
# prometheus for promtool, systemd for systemd-analyze and pipx for the install tests; nginx's Lua
# module with lua-resty-core and lua-cjson for the runtime balancer (docs/nginx-runtime.md) and wrk to load it).
# Idempotent: does nothing when everything is there.
#
# lbgen's tests and demo start their own instances of these services, so the packages' own system
# services are kept from starting (policy-rc.d while installing) and, on systemd hosts, disabled —
# only for the packages this script installed: a service you already ran stays as it was.
set -euo pipefail

packages=(etcd-server etcd-client nginx-light libnginx-mod-stream libnginx-mod-http-lua lua-resty-core lua-cjson wrk haproxy docker.io busybox-static curl python3-venv ca-certificates
          chromium chromium-driver fonts-dejavu-core prometheus systemd pipx)
declare -A services=([etcd-server]="etcd" [nginx-light]="nginx" [haproxy]="haproxy"
                     [docker.io]="docker.socket docker containerd" [prometheus]="prometheus")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${missing[*]}; run as root (or install them) and retry" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  # Debian's way to keep maintainer scripts from starting services (dockerd would otherwise create
  # docker0 on 172.17.0.0/16 and nginx would take port 80). Removed again on exit.
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

if [ -d /run/systemd/system ]; then
  for p in "${missing[@]}"; do
    for svc in ${services[$p]:-}; do
      systemctl disable --now "$svc" >/dev/null 2>&1 || true
    done
  done
fi
