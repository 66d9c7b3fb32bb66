#!/usr/bin/env bash
# Browser tests drive Debian's Chromium; Playwright cannot download browsers here.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium package for the browser tests"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
  exit 0
fi
cat >&2 <<'MSG'
The browser tests need Debian's Chromium at /usr/bin/chromium, and this user cannot
install it. Run, as root:

    apt-get update && apt-get install -y chromium

then run `make test` again.
MSG
exit 1
