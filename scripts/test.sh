#!/usr/bin/env bash
# The test command (CI runs it through .ci/run): installs what is missing,
# makes sure dockerd answers and the test image exists, then runs fmt, clippy,
# a build of the daemons and every test. Extra arguments go to the test runner,
# e.g. scripts/test.sh some_test_name, or (nextest) scripts/test.sh -E 'package(ferry-e2e)'.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

if ! command -v cargo >/dev/null 2>&1 && [[ -f ${HOME:-/root}/.cargo/env ]]; then
  # shellcheck disable=SC1091
  . "${HOME:-/root}/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (https://rustup.rs)"

step "docker"
bash scripts/setup-docker.sh
bash scripts/build-test-image.sh
bash scripts/build-vps-test-image.sh
# The CLI's forward test fetches through it with curl.
if ! command -v curl >/dev/null 2>&1; then
  apt-get install -y -qq --no-install-recommends curl >/dev/null || die "cannot install curl"
fi
# The forward tests run a UDP echo with the node's python3 inside a container's namespace.
if ! command -v python3 >/dev/null 2>&1; then
  apt-get install -y -qq --no-install-recommends python3 >/dev/null || die "cannot install python3"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

# The end-to-end tests start target/debug/ferry-{host,runner}; build them first.
step "cargo build --bins"
cargo build --workspace --bins

if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install cargo-nextest --locked || printf 'cargo-nextest install failed; falling back to cargo test\n'
fi

if cargo nextest --version >/dev/null 2>&1; then
  step "cargo nextest run"
  cargo nextest run --workspace --no-fail-fast "$@"
else
  step "cargo test"
  cargo test --workspace --no-fail-fast "$@"
fi
step "all checks passed"
