# Shared by the MQTT benchmarks (bench-ingest.sh, bench-idle.sh); source it from the repository
# root. It picks the polis binary (POLIS_BIN, else a release build), makes a scratch directory
# `$work`, picks free loopback ports, and on exit stops every process in `pids` and removes `$work`.

bin=${POLIS_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=target/release/polis
fi
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mqtt_port=$(free_port)
http_port=$(free_port)

# Writes `$work/polis.toml` with every listener on a free loopback port. $1 holds extra lines for
# the [gateway] section, $2 extra sections.
write_polis_config() {
  cat > "$work/polis.toml" <<TOML
data_dir = "$work/data"
[gateway]
mqtt_listen = "127.0.0.1:$mqtt_port"
# Device authentication costs once per connection; these benchmarks measure what comes after it.
allow_anonymous = true
${1:-}
[dashboard]
listen = "127.0.0.1:$http_port"
[broker]
kafka_listen = "127.0.0.1:$(free_port)"
[analytics]
pg_listen = "127.0.0.1:$(free_port)"
${2:-}
TOML
}

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
