#!/usr/bin/env bash
# Analytics benchmark in one run: ingest throughput (events per CPU-second) next to DuckDB's
# decode and window of the same readings, then operator queries over EVENTS archived rows
# timed against DuckDB on the same Parquet files. Figures go to BENCHMARKS.md.
#
# ROUNDS > 1 repeats the queries over the same archive, Polis then DuckDB each round, and ends
# with each query's median Polis / DuckDB ratio over the rounds.
#
#   EVENTS=10000000 ROUNDS=3 DIR=target/bench-analytics ./scripts/bench-analytics.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-10000000}
DIR=${DIR:-target/bench-analytics}
ROUNDS=${ROUNDS:-1}

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore duckdb==2.0.1
cargo build --release --locked -p polis-analytics --example analytics_bench
mkdir -p "$DIR"
target/release/examples/analytics_bench "$EVENTS" "$DIR" scripts/analytics-queries.sql \
  | tee "$DIR/polis.jsonl"
rm -f "$DIR/ratios.jsonl"
python3 scripts/bench_analytics_duckdb.py "$DIR" scripts/analytics-queries.sql "$DIR/polis.jsonl" \
  "$DIR/ratios.jsonl"
for round in $(seq 2 "$ROUNDS"); do
  echo
  echo "round $round of $ROUNDS"
  target/release/examples/analytics_bench queries "$DIR" scripts/analytics-queries.sql \
    > "$DIR/polis-$round.jsonl"
  python3 scripts/bench_analytics_duckdb.py "$DIR" scripts/analytics-queries.sql \
    "$DIR/polis-$round.jsonl" "$DIR/ratios.jsonl"
done
if [ "$ROUNDS" -gt 1 ]; then
  python3 scripts/bench_analytics_duckdb.py --rounds "$DIR/ratios.jsonl"
fi
