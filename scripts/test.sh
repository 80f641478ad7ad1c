#!/usr/bin/env bash
# Runs every Polis test on a fresh Debian machine: installs what the tests need, then `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use beyond the Rust toolchain and gcc the machine has.
packages=(
  postgresql-client # psql, in tests/sql_clients.rs
  kcat              # broker/tests/kafka_tools.rs
  mosquitto         # gateway/tests/bridge.rs
  mosquitto-clients # mosquitto_pub over TLS in gateway/tests/tls.rs
  openssl           # self-signed certificates in gateway/tests/tls.rs
  chromium          # tests/browser.rs drives headless Chromium over CDP
)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# Python Kafka clients README.md shows, in broker/tests/kafka_tools.rs.
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore kafka-python==3.0.12 confluent-kafka==2.16.1

cargo test --workspace --locked "$@"
