#!/usr/bin/env bash
# The whole test suite, as CI runs it (README's test command, and .ci/run).
# Starts the services the tests need, then runs every test of the workspace
# with all features, the doc tests, and the ported seed examples.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
  bash scripts/services.sh --with-chromium
else
  sudo bash scripts/services.sh --with-chromium
fi

# Build dependencies: the etcd backend's gRPC code needs protoc and the
# protobuf well-known types (Debian's protobuf-compiler and libprotobuf-dev).
if ! command -v protoc >/dev/null 2>&1 || [ ! -f /usr/include/google/protobuf/descriptor.proto ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    protobuf-compiler libprotobuf-dev >/dev/null || {
    $SUDO apt-get update >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev >/dev/null
  }
fi

export CARGO_TERM_COLOR=never
cargo build --workspace --all-features --all-targets
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --no-fail-fast
else
  cargo test --workspace --all-features --no-fail-fast
fi
cargo test --workspace --all-features --doc

# The seed's examples, ported: bounded runs that assert their task ran.
ROTA_RUN_FOR=2 cargo run -q -p rota --example basic
ROTA_RUN_FOR=2 cargo run -q -p rota --example advanced
# And the seed's distributed example, one node on the local Redis.
ROTA_RUN_FOR=3 cargo run -q -p rota --features cluster-redis --example distributed
echo "all tests passed"
