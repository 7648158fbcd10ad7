#!/usr/bin/env bash
# Installs the Debian packages lbgen's demo and tests run for real (etcd, nginx, haproxy, dockerd,
# busybox for the test image). Idempotent: does nothing when everything is there already.
set -euo pipefail
packages=(etcd-server etcd-client nginx-light haproxy docker.io busybox-static curl python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start system services we do not use: lbgen's tests and demo run their own.
for svc in nginx haproxy etcd docker containerd; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
