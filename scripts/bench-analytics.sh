#!/usr/bin/env bash
# Analytics benchmark in one run: ingest throughput (events per CPU-second) next to DuckDB's
# decode and window of the same readings, then operator queries over EVENTS archived rows
# timed against DuckDB on the same Parquet files. Figures go to BENCHMARKS.md.
#
#   EVENTS=10000000 DIR=target/bench-analytics ./scripts/bench-analytics.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-10000000}
DIR=${DIR:-target/bench-analytics}

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore duckdb==2.0.1
cargo build --release --locked -p polis-analytics --example analytics_bench
mkdir -p "$DIR"
target/release/examples/analytics_bench "$EVENTS" "$DIR" scripts/analytics-queries.sql \
  | tee "$DIR/polis.jsonl"
python3 scripts/bench_analytics_duckdb.py "$DIR" scripts/analytics-queries.sql "$DIR/polis.jsonl"
