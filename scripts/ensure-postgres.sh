#!/usr/bin/env bash
# The ledger tests start a throwaway PostgreSQL server themselves; they need
# Debian's server binaries. Install them when missing and we are allowed to.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's postgresql package for the ledger tests"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  # the package starts a cluster of its own; the tests use their own server
  service postgresql stop >/dev/null 2>&1 || true
else
  echo "PostgreSQL server binaries are missing (Debian package 'postgresql');" \
       "PostgreSQL tests will be skipped, or fail under CI=true" >&2
fi
