#!/usr/bin/env bash
# The scale-out and compose tests run a real nginx (Debian's package) in front of the web
# servers, with a config rendered from deploy/nginx.conf (tests/nginx.py).
set -euo pipefail
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "installing Debian's nginx package for the scale-out tests"
  apt-get update -q
  # Installed only as a binary for the tests: its own service is not started.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx
  exit 0
fi
cat >&2 <<'MSG'
The scale-out and compose tests need Debian's nginx (/usr/sbin/nginx), and this user
cannot install it. Run, as root:

    apt-get update && apt-get install -y --no-install-recommends nginx

then run `make test` again.
MSG
exit 1
