#!/usr/bin/env bash
# Benchmark: the ingest rate the whole platform sustains on this machine, against Mosquitto.
#
# Simulated devices publish QoS 1 over real MQTT connections (one per device) into `polis up`
# (release build); every message is validated and fsynced to the log before its PUBACK. The rate
# stored is read from SQL twice, MEASURE seconds apart, after a warm-up, and set against the rate
# offered (devices / interval); the PUBLISH → PUBACK-after-fsync latency over the same window comes
# from the gateway's `durable_ack_latency_seconds` histogram (quantiles are bucket upper bounds).
# Then the same load goes to a plain Debian Mosquitto (no persistence) with one QoS 1 subscriber
# on `city/#`, and the rate that subscriber receives is measured the same way. For both runs the
# script also prints the rate of PUBACKs the simulators received (from their 10 s progress lines),
# which shows whether a server acknowledged more than it stored or relayed.
#
#   DEVICES=1000 INTERVAL=100ms MEASURE=30 ./scripts/bench-ingest.sh
# POLIS_BIN=path/to/polis skips the release build; MOSQUITTO=0 skips the Mosquitto run.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=${DEVICES:-1000}
interval=${INTERVAL:-100ms}
measure=${MEASURE:-30}
warmup=${WARMUP:-10}
with_mosquitto=${MOSQUITTO:-1}

. scripts/bench-common.sh
write_polis_config

traffic=$((devices * 2 / 5)); energy=$((devices * 2 / 5)); vehicles=$((devices - traffic - energy))
simulate() { # MQTT port, log file
  "$bin" simulate --mqtt "mqtt://127.0.0.1:$1" --traffic "$traffic" --energy "$energy" \
    --vehicles "$vehicles" --interval "$interval" > "$2" 2>&1 &
  pids=("$!" "${pids[@]}")
}
stop_all() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  pids=()
}

"$bin" up --config "$work/polis.toml" > "$work/up.log" 2>&1 &
pids+=("$!")
url="http://127.0.0.1:$http_port"
for _ in $(seq 200); do curl -sf -o /dev/null "$url/api/health" && break; sleep 0.1; done
stored() {
  "$bin" sql --url "$url" --format json \
    "SELECT (SELECT count(*) FROM traffic) + (SELECT count(*) FROM energy) + (SELECT count(*) FROM transport) AS n" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["n"])'
}
simulate "$mqtt_port" "$work/sim.log"
sleep "$warmup"
curl -sf "$url/metrics" > "$work/metrics0"
n0=$(stored); t0=$(date +%s.%N)
sleep "$measure"
n1=$(stored); t1=$(date +%s.%N)
curl -sf "$url/metrics" > "$work/metrics1"
dead=$("$bin" sql --url "$url" --format json "SELECT count(*) AS n FROM deadletter" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["n"])')
stop_all

relayed=""
if [ "$with_mosquitto" = 1 ]; then
  broker_port=$(free_port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_connections -1\nmax_queued_messages 100000\nmax_inflight_messages 1000\n' \
    "$broker_port" > "$work/mosquitto.conf"
  /usr/sbin/mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $broker_port))" 2>/dev/null && break; sleep 0.1; done
  mosquitto_sub -h 127.0.0.1 -p "$broker_port" -q 1 -t 'city/#' > "$work/relayed" 2>/dev/null &
  pids+=("$!")
  simulate "$broker_port" "$work/sim-mosquitto.log"
  sleep "$warmup"
  m0=$(wc -l < "$work/relayed"); s0=$(date +%s.%N)
  sleep "$measure"
  m1=$(wc -l < "$work/relayed"); s1=$(date +%s.%N)
  stop_all
  relayed="$m0 $m1 $s0 $s1"
fi

python3 - "$n0" "$n1" "$t0" "$t1" "$devices" "$interval" "$dead" "$work/metrics0" "$work/metrics1" "$work" $relayed <<'PY'
import datetime, re, sys
n0, n1, t0, t1, devices, interval, dead, before, after, work = sys.argv[1:11]
secs = float(interval[:-2]) * 1e-3 if interval.endswith("ms") else float(interval[:-1])
offered = int(devices) / secs
stored = (int(n1) - int(n0)) / (float(t1) - float(t0))

def acked(log):
    """PUBACKs the simulators received per second, from their last two progress lines (10 s apart)."""
    points = []
    for line in open(log):
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        m = re.match(r"(\S+)Z .*simulators running published=(\d+)", line)
        if m:
            points.append((datetime.datetime.fromisoformat(m.group(1)), int(m.group(2))))
    if len(points) < 2:
        return "n/a (fewer than two progress lines: make WARMUP + MEASURE at least 20 s)"
    (ta, a), (tb, b) = points[-2:]
    return f"{(b - a) / (tb - ta).total_seconds():,.0f} msg/s"

def buckets(path):
    out = {}
    for line in open(path):
        m = re.match(r'polis_gateway_durable_ack_latency_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
        if m:
            out[float(m.group(1))] = int(m.group(2))
    return out

b0, b1 = buckets(before), buckets(after)
window = {le: b1[le] - b0.get(le, 0) for le in sorted(b1)}
total = window[float("inf")]

def quantile(q):
    return next((le for le, n in window.items() if n >= q * total), float("inf"))

def ms(le):
    return "> 1 s" if le == float("inf") else f"<= {le * 1e3:g} ms"

print(f"polis: devices={devices} interval={interval} offered={offered:,.0f} msg/s stored={stored:,.0f} msg/s "
      f"ratio={stored / offered:.3f} dead_letters={dead} durable_ack p50 {ms(quantile(0.5))} "
      f"p99 {ms(quantile(0.99))} ({total:,} acks) acked by polis={acked(f'{work}/sim.log')}")
if len(sys.argv) > 11:
    m0, m1, s0, s1 = sys.argv[11:15]
    relayed = (int(m1) - int(m0)) / (float(s1) - float(s0))
    print(f"mosquitto: offered={offered:,.0f} msg/s relayed={relayed:,.0f} msg/s ratio={relayed / offered:.3f} "
          f"acked by mosquitto={acked(f'{work}/sim-mosquitto.log')}")
    print(f"polis stored / mosquitto relayed = {stored / relayed:.2f}")
PY
