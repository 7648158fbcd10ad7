#!/usr/bin/env bash
# `make install` / `make uninstall` (docs/install.md): lbgen in a virtualenv, the `lbgen` command,
# the systemd units, the docs, and example settings under /etc/lbgen that survive re-installs.
#
#   scripts/install.sh install|uninstall
#
# Paths (environment, as make passes them): PREFIX=/usr/local (bin/lbgen, lib/systemd/system,
# share/doc/lbgen), LBGEN_HOME=/opt/lbgen (the virtualenv), SYSCONFDIR=/etc (lbgen/),
# UNITDIR=$PREFIX/lib/systemd/system, LBGEN_USER=lbgen (the agent's system user; empty: none
# created), PYTHON=python3. The files installed carry these paths, so a root in a temp directory
# works as well as the real one (tests/integration/test_install.py does that).
#
# Files under $SYSCONFDIR/lbgen are the operator's: one is (re)written only while it still equals
# what an earlier install wrote (a checksum in $LBGEN_HOME/lbgen-etc.sha256); an edited one is kept
# and the new version goes beside it as FILE.lbgen-new. Uninstall removes only unedited ones.
# Idempotent: running either action twice is the same as once.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="${PREFIX:-/usr/local}"
LBGEN_HOME="${LBGEN_HOME:-/opt/lbgen}"
SYSCONFDIR="${SYSCONFDIR:-/etc}"
UNITDIR="${UNITDIR:-$PREFIX/lib/systemd/system}"
LBGEN_USER="${LBGEN_USER-lbgen}"
PYTHON="${PYTHON:-python3}"
BIN="$PREFIX/bin/lbgen"
DOCDIR="$PREFIX/share/doc/lbgen"
ETC="$SYSCONFDIR/lbgen"
SUMS="$LBGEN_HOME/lbgen-etc.sha256"
UNITS=(agent/lbgen-agent.service nginx/lbgen-watch-nginx.service haproxy/lbgen-watch-haproxy.service
       dashboard/lbgen-dashboard.service)
# Drop-ins for the LBs' own units (source → path under $UNITDIR).
DROPINS=("nginx/nginx.service.d/lbgen-runtime.conf nginx.service.d/lbgen-runtime.conf")
# source → path under $ETC, mode
ETC_FILES=("nginx/lbgen.yaml nginx.yaml 0644" "haproxy/lbgen.yaml haproxy.yaml 0644"
           "templates/nginx.conf.j2 templates/nginx.conf.j2 0644"
           "templates/haproxy.cfg.j2 templates/haproxy.cfg.j2 0644"
           "agent/lbgen-agent.env lbgen-agent.env 0640"
           "dashboard/lbgen-dashboard.env lbgen-dashboard.env 0640"
           "nginx/lbgen-watch-nginx.env lbgen-watch-nginx.env 0600"
           "haproxy/lbgen-watch-haproxy.env lbgen-watch-haproxy.env 0600")
DOCS=(README.md docs/*.md nginx/README.md haproxy/README.md agent/README.md monitoring/README.md)

say() { echo "${0##*/}: $*"; }
die() { echo "${0##*/}: $*" >&2; exit 1; }

# The shipped text with the default paths replaced by this install's.
localize() {
  sed -e "s#/usr/local/bin/lbgen#$BIN#g" -e "s#/usr/local/share/doc/lbgen#$DOCDIR#g" \
      -e "s#/etc/lbgen#$ETC#g" -e "s#/opt/lbgen#$LBGEN_HOME#g" "$1"
}

install_venv() {
  [ -x "$LBGEN_HOME/bin/python" ] || "$PYTHON" -m venv "$LBGEN_HOME" \
    || die "$PYTHON -m venv $LBGEN_HOME failed (Debian: apt-get install python3-venv)"
  # Built from a copy: pip would leave build/ and *.egg-info in the checkout. A local directory is
  # always reinstalled, so a re-install brings the checkout's code. pip honours PIP_INDEX_URL,
  # PIP_FIND_LINKS and PIP_NO_INDEX: an offline node installs from a wheelhouse.
  local stage
  stage="$(mktemp -d)"
  cp -r "$SRC/setup.py" "$SRC/setup.cfg" "$SRC/README.md" "$SRC/lbgen" "$stage/"
  "$LBGEN_HOME/bin/python" -m pip install -q "$stage" \
    || { rm -rf "$stage"; die "pip install $SRC into $LBGEN_HOME failed (see above)"; }
  rm -rf "$stage"
  say "lbgen $("$LBGEN_HOME/bin/python" -c 'import lbgen; print(lbgen.__version__)') in $LBGEN_HOME"
}

# Refuses (before anything is written) to replace an `lbgen` this install did not put there.
check_bin() {
  if [ -e "$BIN" ] || [ -L "$BIN" ]; then
    [ "$(readlink "$BIN")" = "$LBGEN_HOME/bin/lbgen" ] && return 0
    die "$BIN exists and is not lbgen's link to $LBGEN_HOME/bin/lbgen: remove it first (pipx? docs/install.md)"
  fi
}

install_bin() {
  [ -L "$BIN" ] && return 0
  install -d "$(dirname "$BIN")"
  ln -s "$LBGEN_HOME/bin/lbgen" "$BIN"
  say "$BIN -> $LBGEN_HOME/bin/lbgen"
}

install_files() {
  install -d "$UNITDIR" "$DOCDIR"
  for unit in "${UNITS[@]}"; do
    localize "$SRC/$unit" >"$UNITDIR/$(basename "$unit")"
    chmod 0644 "$UNITDIR/$(basename "$unit")"
  done
  for entry in "${DROPINS[@]}"; do
    set -- $entry
    install -D -m 0644 "$SRC/$1" "$UNITDIR/$2"
  done
  for doc in "${DOCS[@]}"; do
    install -D -m 0644 "$SRC/$doc" "$DOCDIR/$doc"
  done
  cp -r "$SRC/monitoring/prometheus" "$SRC/monitoring/grafana" "$DOCDIR/monitoring/"
  say "units in $UNITDIR, docs and the monitoring kit in $DOCDIR"
}

# The recorded checksum of what an earlier install wrote to $ETC/$1 (empty: none).
recorded() { [ -f "$SUMS" ] && awk -v f="$1" '$2 == f { print $1 }' "$SUMS" || true; }

record() {
  local tmp="$SUMS.tmp"
  { [ -f "$SUMS" ] && awk -v f="$2" '$2 != f' "$SUMS"; echo "$1 $2"; } >"$tmp" || true
  mv "$tmp" "$SUMS"
}

install_etc_file() {
  local src="$1" rel="$2" mode="$3" dest="$ETC/$2" new sum
  new="$(mktemp)"
  localize "$SRC/$src" >"$new"
  sum="$(sha256sum <"$new" | cut -d' ' -f1)"
  if [ -e "$dest" ] && [ "$(sha256sum <"$dest" | cut -d' ' -f1)" != "$(recorded "$rel")" ] \
     && ! cmp -s "$new" "$dest"; then
    install -m "$mode" "$new" "$dest.lbgen-new"
    say "kept $dest (edited); this version is $dest.lbgen-new"
  else
    install -D -m "$mode" "$new" "$dest"
    rm -f "$dest.lbgen-new"
    record "$sum" "$rel"
  fi
  rm -f "$new"
  # The agent's and the dashboard's options may hold secrets: readable by their group only.
  if [ "$mode" = 0640 ] && [ -n "$LBGEN_USER" ] && getent group "$LBGEN_USER" >/dev/null; then
    chgrp "$LBGEN_USER" "$dest"
  fi
}

install_user() {
  [ -n "$LBGEN_USER" ] || return 0
  getent passwd "$LBGEN_USER" >/dev/null && return 0
  useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin \
    --comment "lbgen agent" "$LBGEN_USER"
  say "created system user $LBGEN_USER (runs lbgen-agent.service)"
}

do_install() {
  [ -d "$SRC/lbgen" ] || die "no lbgen source in $SRC"
  check_bin
  install_user
  install_venv
  install_bin
  install_files
  install -d -m 0755 "$ETC"
  for entry in "${ETC_FILES[@]}"; do
    # shellcheck disable=SC2086  # three words: source, path under $ETC, mode
    install_etc_file $entry
  done
  say "done. Next: edit $ETC, then 'systemctl daemon-reload' and enable a unit (docs/install.md)"
}

uninstall_etc() {
  [ -f "$SUMS" ] || return 0
  while read -r sum rel; do
    local dest="$ETC/$rel"
    [ -e "$dest" ] || continue
    if [ "$(sha256sum <"$dest" | cut -d' ' -f1)" = "$sum" ]; then
      rm -f "$dest"
    else
      say "kept $dest (edited)"
    fi
    rm -f "$dest.lbgen-new"
  done <"$SUMS"
  rmdir "$ETC/templates" "$ETC" 2>/dev/null || true
}

do_uninstall() {
  uninstall_etc
  for unit in "${UNITS[@]}"; do
    rm -f "$UNITDIR/$(basename "$unit")"
  done
  for entry in "${DROPINS[@]}"; do
    set -- $entry
    rm -f "$UNITDIR/$2"
    rmdir "$(dirname "$UNITDIR/$2")" 2>/dev/null || true
  done
  [ "$(readlink "$BIN" 2>/dev/null)" = "$LBGEN_HOME/bin/lbgen" ] && rm -f "$BIN"
  rm -rf "$DOCDIR" "$LBGEN_HOME"
  say "removed lbgen from $LBGEN_HOME, $BIN, $UNITDIR and $DOCDIR${LBGEN_USER:+ (the user $LBGEN_USER stays)}"
}

case "${1:-}" in
  install) do_install ;;
  uninstall) do_uninstall ;;
  *) die "usage: $0 install|uninstall" ;;
esac
