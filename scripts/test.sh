#!/usr/bin/env bash
# The whole test suite, on a fresh machine: formatting, lints, every test.
# Usage: scripts/test.sh            (CI runs exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# The Kafka tests need tansu, a Kafka-compatible broker (memory storage needs the
# dynostore feature). Installed once per machine (about 15 minutes), reused after.
if ! command -v tansu >/dev/null 2>&1; then
  echo "== installing tansu 0.6.0 (once per machine)"
  cargo install tansu --version 0.6.0 --features dynostore
fi

# tests/broken_environment.rs mounts small tmpfs file systems to fill a disk and drops to
# `nobody` with setpriv to meet a missing permission: it needs root, as the test machines
# and CI have.
# The handler tests run a Python handler (examples/handler.py) and make TLS certificates;
# the observability tests check docs/alerts.yml with promtool (Debian's prometheus).
missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# The console's browser test: Debian's chromium, driven by playwright-core under Node.
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The SQS tests run against moto's server mode (and check signatures against botocore,
# which comes with it).
if ! python3 -c "import moto.server, botocore" >/dev/null 2>&1; then
  echo "== installing moto[server] (pip)"
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]==5.2.1'
fi

browser=crates/ordo-console/browser
if [ ! -d "$browser/node_modules/playwright-core" ]; then
  echo "== installing playwright-core (npm ci)"
  npm ci --prefix "$browser" --no-audit --no-fund
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
# With the test-only fault injection (tests/crash.rs), and without it, as shipped.
cargo clippy --workspace --all-targets --features ordo-cli/fault-injection -- -D warnings
cargo clippy -p ordo-cli -p ordo-store -- -D warnings

echo "== each store backend builds alone (ordo-store features sqlite, postgres)"
cargo clippy -q -p ordo-store --no-default-features --features sqlite -- -D warnings
cargo clippy -q -p ordo-store --no-default-features --features postgres -- -D warnings
cargo clippy -q -p ordo-runtime --no-default-features -- -D warnings

echo "== the fuzz targets still build (fuzz/; run them with cargo +nightly fuzz)"
RUSTFLAGS="--cfg fuzzing" cargo check -q --manifest-path fuzz/Cargo.toml --bins

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets --features ordo-cli/fault-injection 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -eq 0 ]; then
  echo "== ordo chaos: a few hundred seeds through the CLI"
  set +e
  cargo run -q -p ordo-cli -- chaos --seeds 300 --matrix-seeds 2 | tee -a "$log"
  chaos_status=${PIPESTATUS[0]}
  if [ "$chaos_status" -eq 0 ]; then
    echo "== ordo chaos --swarm: fault rates drawn per seed"
    cargo run -q -p ordo-cli -- chaos --seeds 300 --swarm --matrix-seeds 0 | tee -a "$log"
    chaos_status=${PIPESTATUS[0]}
  fi
  set -e
  if [ "$chaos_status" -ne 0 ]; then status=$chaos_status; fi
fi
# One closing line over every test binary, so the total is what a reader sees last.
passed=$(grep -oE 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -oE '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
