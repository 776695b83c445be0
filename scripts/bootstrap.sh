#!/usr/bin/env bash
# Installs what LoopCRM needs on a fresh Debian/Ubuntu machine, then the Python package.
#   system: Java (runs the local Kafka broker), Maven (fetches Kafka's jars from Maven
#           Central into ~/.cache/loopcrm), PostgreSQL's server binaries.
#   python: a virtualenv (default .venv) with LoopCRM and its test extras.
# Safe to re-run: it installs only what is missing.
set -euo pipefail
venv="${1:-.venv}"
cd "$(dirname "$0")/.."

missing=()
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing system packages: ${missing[*]}; run: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a cluster on install; LoopCRM runs its own, so stop the packaged one.
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    for cluster in /etc/postgresql/*/main; do
      [[ -d $cluster ]] && pg_ctlcluster "$(basename "$(dirname "$cluster")")" main stop 2>/dev/null || true
    done
  fi
fi

if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -e '.[test]'
echo "ready: $venv/bin/crm"
