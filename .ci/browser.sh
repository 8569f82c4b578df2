#!/usr/bin/env bash
# The browser end-to-end test of the demo pages (/demo/): installs what is missing (Debian's
# chromium, zbar-tools to read the QR code, node's playwright-core from tests/browser's lock
# file), then builds `keymaster`, starts `keymaster serve --demo` (the demo is off unless asked
# for) on a free loopback port with a fresh database, and walks the demo in headless Chromium.
# Fails loudly when anything is missing or any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v zbarimg >/dev/null || missing+=(zbar-tools)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "browser: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -x /usr/bin/chromium ] || { echo "browser: /usr/bin/chromium is missing after install" >&2; exit 1; }

echo "browser: npm ci in tests/browser"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

echo "browser: building keymaster"
cargo build --quiet --bin keymaster

echo "browser: demo end-to-end test in headless $(/usr/bin/chromium --version 2>/dev/null | head -n1)"
(cd tests/browser && npm test)
