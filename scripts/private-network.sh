#!/usr/bin/env bash
# Run a command in a network namespace of its own whose only interface is
# loopback, brought up: what it starts (Ray's services, a throwaway
# PostgreSQL) can talk to itself and to nothing else. Needs root.
set -euo pipefail
if [ "$#" -eq 0 ]; then
  echo "usage: scripts/private-network.sh COMMAND [ARG...]" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/private-network.sh needs root (unshare --net); running without isolation:" \
       "the tests that need it skip (and fail under CI=true)" >&2
  exec "$@"
fi
exec unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh "$@"
