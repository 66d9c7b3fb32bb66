#!/usr/bin/env bash
# The operations tests run Debian's prometheus (the server, scraping the test stack) and
# promtool (checking deploy/prometheus.yml and deploy/alerts.yml).
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "installing Debian's prometheus package for the operations tests"
  apt-get update -q
  # No daemon is started here: a container has no init, and the tests start their own.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
  exit 0
fi
cat >&2 <<'MSG'
The operations tests need Debian's prometheus package (prometheus and promtool), and
this user cannot install it. Run, as root:

    apt-get update && apt-get install -y --no-install-recommends prometheus

then run `make test` again.
MSG
exit 1
