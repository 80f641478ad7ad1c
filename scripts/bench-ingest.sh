#!/usr/bin/env bash
# Benchmark: the ingest rate the whole platform sustains on this machine.
#
# Simulated devices publish QoS 1 over real MQTT connections into `polis up` (release build); every
# message is validated and fsynced to the log. The rate stored is read from SQL twice, MEASURE
# seconds apart, after a warm-up, and set against the rate offered (devices / interval).
#
#   DEVICES=1000 INTERVAL=100ms MEASURE=30 ./scripts/bench-ingest.sh
# POLIS_BIN=path/to/polis skips the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=${DEVICES:-1000}
interval=${INTERVAL:-100ms}
measure=${MEASURE:-30}
warmup=${WARMUP:-10}

bin=${POLIS_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=target/release/polis
fi
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mqtt_port=$(free_port)
http_port=$(free_port)
cat > "$work/polis.toml" <<TOML
data_dir = "$work/data"
[gateway]
mqtt_listen = "127.0.0.1:$mqtt_port"
# The benchmark measures ingest; device authentication costs once per connection, not per message.
allow_anonymous = true
[dashboard]
listen = "127.0.0.1:$http_port"
[broker]
kafka_listen = "127.0.0.1:$(free_port)"
[analytics]
pg_listen = "127.0.0.1:$(free_port)"
TOML

"$bin" up --config "$work/polis.toml" > "$work/up.log" 2>&1 &
platform=$!
sim=""
cleanup() {
  [ -n "$sim" ] && kill -INT "$sim" 2>/dev/null && wait "$sim" 2>/dev/null || true
  kill -INT "$platform" 2>/dev/null && wait "$platform" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
url="http://127.0.0.1:$http_port"
for _ in $(seq 200); do curl -sf -o /dev/null "$url/api/health" && break; sleep 0.1; done

stored() {
  "$bin" sql --url "$url" --format json \
    "SELECT (SELECT count(*) FROM traffic) + (SELECT count(*) FROM energy) + (SELECT count(*) FROM transport) AS n" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["n"])'
}

traffic=$((devices * 2 / 5)); energy=$((devices * 2 / 5)); vehicles=$((devices - traffic - energy))
"$bin" simulate --mqtt "mqtt://127.0.0.1:$mqtt_port" --traffic "$traffic" --energy "$energy" \
  --vehicles "$vehicles" --interval "$interval" > "$work/sim.log" 2>&1 &
sim=$!
sleep "$warmup"
n0=$(stored); t0=$(date +%s.%N)
sleep "$measure"
n1=$(stored); t1=$(date +%s.%N)
dead=$("$bin" sql --url "$url" --format json "SELECT count(*) AS n FROM deadletter" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["n"])')
python3 - "$n0" "$n1" "$t0" "$t1" "$devices" "$interval" "$dead" <<'PY'
import sys
n0, n1, t0, t1, devices, interval, dead = sys.argv[1:]
unit = {"ms": 1e-3, "s": 1.0}
secs = float(interval[:-2]) * unit["ms"] if interval.endswith("ms") else float(interval[:-1])
offered = int(devices) / secs
stored = (int(n1) - int(n0)) / (float(t1) - float(t0))
print(f"devices={devices} interval={interval} offered={offered:,.0f} msg/s stored={stored:,.0f} msg/s "
      f"ratio={stored / offered:.3f} dead_letters={dead}")
PY
