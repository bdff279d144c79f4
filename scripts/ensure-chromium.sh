#!/usr/bin/env bash
# The report test renders the HTML page in headless Chromium; it needs
# Debian's chromium package. Install it when missing and we are allowed to.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium package for the report test"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "Chromium is missing (Debian package 'chromium');" \
       "the report rendering test will be skipped, or fail under CI=true" >&2
fi
