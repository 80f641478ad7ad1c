#!/usr/bin/env bash
# Runs every Polis test on a fresh Debian machine: installs what the tests need, then `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use beyond the Rust toolchain and gcc the machine has.
packages=(postgresql-client) # psql, in tests/sql_clients.rs
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo test --workspace --locked "$@"
