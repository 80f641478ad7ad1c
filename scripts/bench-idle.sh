#!/usr/bin/env bash
# Benchmark: the memory idle device connections cost the gateway, against Mosquitto.
#
# `polis simulate` opens CONNECTIONS real MQTT connections (one per device, 30 s keep-alive, one
# reading per device per hour) to `polis up` (release build), and the script waits until the
# gateway's `polis_gateway_connections` gauge shows every one of them open. The resident memory
# (VmRSS) of the `polis up` process before the devices connect and SETTLE seconds after the last
# one has are set side by side. Then the same devices connect to a plain Debian Mosquitto, measured
# the same way. The per-connection cost is the growth divided by the connections; the figure for
# 50,000 connections is that cost extrapolated, because one process here may open at most
# `ulimit -n` files (20,000 on the project VM) and the gateway holds three per device: the
# device's socket, and both ends of its relay to the embedded rumqttd.
#
#   CONNECTIONS=6000 SETTLE=40 ./scripts/bench-idle.sh
# POLIS_BIN=path/to/polis skips the release build; MOSQUITTO=0 skips the Mosquitto run.
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${CONNECTIONS:-6000}
settle=${SETTLE:-40}
with_mosquitto=${MOSQUITTO:-1}
fd_limit=$(ulimit -n)
if [ $((3 * connections)) -gt $((fd_limit - 1000)) ]; then
  echo "CONNECTIONS=$connections needs $((3 * connections)) files in polis, over ulimit -n = $fd_limit with 1,000 to spare" >&2
  exit 2
fi

. scripts/bench-common.sh
write_polis_config "max_connections = $((connections + 100))" $'[simulate]\nconnect_per_second = 2000'

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
traffic=$((connections / 2)); energy=$((connections - traffic))
simulate() { # MQTT port, log file
  "$bin" simulate --config "$work/polis.toml" --mqtt "mqtt://127.0.0.1:$1" --traffic "$traffic" \
    --energy "$energy" --vehicles 0 --interval 1h > "$2" 2>&1 &
  pids=("$!" "${pids[@]}")
}
stop_simulators() {
  kill -INT "${pids[0]}" && wait "${pids[0]}" 2>/dev/null || true
  pids=("${pids[@]:1}")
}
wait_until() { # seconds, command...
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then echo "timed out waiting for: $*" >&2; exit 1; fi
    sleep 0.5
  done
}
ramp_deadline=$((connections / 1000 + 60))

"$bin" up --config "$work/polis.toml" > "$work/up.log" 2>&1 &
polis=$!
pids+=("$polis")
url="http://127.0.0.1:$http_port"
wait_until 30 curl -sf -o /dev/null "$url/api/health"
polis_before=$(rss_kib "$polis")
gateway_connections() { curl -sf "$url/metrics" | awk '$1 == "polis_gateway_connections" { print $2 }'; }
all_open_on_polis() { [ "$(gateway_connections)" = "$connections" ]; }
# Connects the devices to one server and sets `idle_rss` to its RSS once they have all idled
# SETTLE seconds.
rss_with_idle_devices() { # server name, MQTT port, server pid, check that every device is open
  simulate "$2" "$work/sim-$1.log"
  wait_until "$ramp_deadline" "$4"
  sleep "$settle"
  "$4" || { echo "$1: connections dropped while idle" >&2; exit 1; }
  idle_rss=$(rss_kib "$3")
  stop_simulators
}
rss_with_idle_devices polis "$mqtt_port" "$polis" all_open_on_polis
polis_after=$idle_rss

mosquitto_before="" mosquitto_after=""
if [ "$with_mosquitto" = 1 ]; then
  broker_port=$(free_port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_connections -1\nsys_interval 1\n' \
    "$broker_port" > "$work/mosquitto.conf"
  /usr/sbin/mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
  mosquitto=$!
  pids+=("$mosquitto")
  mosquitto_listening() { python3 -c "import socket; socket.create_connection(('127.0.0.1', $broker_port))" 2>/dev/null; }
  wait_until 10 mosquitto_listening
  mosquitto_before=$(rss_kib "$mosquitto")
  mosquitto_clients() {
    mosquitto_sub -h 127.0.0.1 -p "$broker_port" -C 1 -W 5 -t '$SYS/broker/clients/connected' 2>/dev/null
  }
  # The probing subscriber may be counted too, and the count lags by up to `sys_interval`.
  all_open_on_mosquitto() { [ "$(mosquitto_clients)" -ge "$connections" ]; }
  rss_with_idle_devices mosquitto "$broker_port" "$mosquitto" all_open_on_mosquitto
  mosquitto_after=$idle_rss
fi

python3 - "$connections" "$polis_before" "$polis_after" $mosquitto_before $mosquitto_after <<'PY'
import sys
connections = int(sys.argv[1])

def report(name, before, after):
    per = (after - before) / connections
    at_50k = (before + per * 50_000) / 1024 / 1024
    print(f"{name}: {connections:,} idle connections, RSS {before / 1024:,.0f} MiB before, "
          f"{after / 1024:,.0f} MiB after, {per:,.1f} KiB per connection, "
          f"{at_50k:.2f} GiB extrapolated to 50,000")
    return per

polis = report("polis", int(sys.argv[2]), int(sys.argv[3]))
if len(sys.argv) > 4:
    mosquitto = report("mosquitto", int(sys.argv[4]), int(sys.argv[5]))
    print(f"polis / mosquitto memory per connection = {polis / mosquitto:.2f}")
PY
