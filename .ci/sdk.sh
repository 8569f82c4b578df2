#!/usr/bin/env bash
# CI for the client libraries (sdk/python, sdk/typescript): installs each into a fresh
# environment — `pip install ./sdk/python` into a new venv, the `npm pack` tarball of
# sdk/typescript into a new directory — and runs its tests there against a real
# `keymaster serve` that the tests start. Also checks that sdk/typescript/src/api.ts matches the
# server's /openapi.json, and that the browser demo's checked-in copy of the built package
# (crates/keymaster-server/demo/sdk/) is what this build produces. Installs python3-venv, nodejs
# and npm with apt when missing; fails loudly on anything missing or failing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

missing=()
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "sdk: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -c 'import venv, ensurepip' || { echo "sdk: python3 has no venv/ensurepip after install" >&2; exit 1; }
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 18 ]; then
  echo "sdk: Node $(node --version) is too old; the TypeScript package needs Node 18 or later" >&2
  exit 1
fi

echo "sdk: cargo build --bin keymaster"
cargo build --quiet --bin keymaster
export KEYMASTER_BIN="$root/target/debug/keymaster"
[ -x "$KEYMASTER_BIN" ] || { echo "sdk: no binary at $KEYMASTER_BIN" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "sdk: Python — pip install ./sdk/python into a fresh venv"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check "$root/sdk/python" pytest mypy
echo "sdk: Python — mypy --strict on the installed package"
# The package claims to be typed (py.typed): its own code must pass a strict check.
(cd "$work" && "$work/venv/bin/mypy" --strict -p keymaster_client --no-incremental)
echo "sdk: Python — pytest"
# Run from the tests directory with the source tree off sys.path: the installed package is tested.
(cd "$root/sdk/python" && "$work/venv/bin/python" -m pytest -q -p no:cacheprovider tests)

echo "sdk: TypeScript — npm ci, build"
cd "$root/sdk/typescript"
npm ci --prefer-offline --no-audit --no-fund --loglevel=error
npm run --silent build
echo "sdk: TypeScript — the demo's copy (crates/keymaster-server/demo/sdk/) is this build"
# The server's build has no tsc, so the demo embeds a checked-in copy of dist/; it must not drift.
node scripts/demo-assets.mjs --check
echo "sdk: TypeScript — unit tests of internal modules (source tree)"
node --test test/sse.test.mjs
echo "sdk: TypeScript — src/api.ts is what /openapi.json generates"
npm run --silent gen:types
if ! git -C "$root" diff --exit-code -- sdk/typescript/src/api.ts; then
  echo "sdk: sdk/typescript/src/api.ts is out of date with the server's /openapi.json: run 'npm run gen:types' in sdk/typescript and commit it" >&2
  exit 1
fi
echo "sdk: TypeScript — npm pack, install into a fresh directory"
# Built above; --ignore-scripts skips `prepare`, which would compile the same sources again.
tarball=$(npm pack --silent --ignore-scripts --pack-destination "$work")
mkdir "$work/ts"
cp test/helpers.mjs test/offline.test.mjs test/live.test.mjs test/consumer.ts test/tsconfig.json "$work/ts/"
cd "$work/ts"
echo '{"name": "sdk-ci", "private": true, "type": "module"}' >package.json
npm install --prefer-offline --no-audit --no-fund --loglevel=error "$work/$tarball"
if [ -n "$(ls node_modules | grep -v '^keymaster-client$' | grep -v '^\.')" ]; then
  echo "sdk: installing keymaster-client brought runtime dependencies: $(ls node_modules)" >&2
  exit 1
fi
echo "sdk: TypeScript — a consumer's type check of the installed declarations"
"$root/sdk/typescript/node_modules/.bin/tsc" -p tsconfig.json
echo "sdk: TypeScript — node --test"
node --test offline.test.mjs live.test.mjs
echo "sdk: ok"
