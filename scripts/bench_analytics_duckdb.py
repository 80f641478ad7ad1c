"""DuckDB beside Polis for scripts/bench-analytics.sh.

Decode and window: DuckDB reads the sample of canonical readings (DIR/sample.ndjson) and
aggregates it per 10 s window and district on one thread, as Polis's shipped traffic metric does;
its readings per second on that core are set against Polis's ingest per CPU-second.

Queries: every statement of QUERIES over a view of DIR/archive/traffic/**/*.parquet, the files
Polis archived, with DuckDB's default threads (2 here, as analytics.query_threads). Each runs
five times; the medians are set against Polis's medians from POLIS_JSONL, and the row counts must
agree. Without an ingest line in POLIS_JSONL (`analytics_bench queries ...`) only the queries run.
With RATIOS, each query's Polis / DuckDB ratio is appended to that file as one JSON line per run
of this script; `--rounds RATIOS` then prints each query's median ratio over those rounds, which
is steadier on a noisy machine than any one round.

    python3 scripts/bench_analytics_duckdb.py DIR QUERIES POLIS_JSONL [RATIOS]
    python3 scripts/bench_analytics_duckdb.py --rounds RATIOS
"""

import json
import statistics
import sys
import time
from pathlib import Path

import duckdb

RUNS = 5
COLUMNS = {
    "device_id": "VARCHAR",
    "district": "VARCHAR",
    "observed_at": "TIMESTAMPTZ",
    "ingested_at": "TIMESTAMPTZ",
    "lane_id": "BIGINT",
    "vehicles": "BIGINT",
    "occupancy_ratio": "DOUBLE",
    "average_speed_kmh": "DOUBLE",
    "congested": "BOOLEAN",
    "sequence": "BIGINT",
}


def statements(path):
    """The `;`-terminated statements of `path`, without its `--` comment lines."""
    lines = [l for l in Path(path).read_text().splitlines() if not l.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def timed(con, sql, runs):
    times, rows = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        rows = len(con.execute(sql).fetchall())
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), rows


def compare_ingest(con, directory, ingest):
    """DuckDB's decode and window of the sample on one thread, against Polis's `ingest` line."""
    con.execute("SET threads = 1")
    sample = Path(directory) / "sample.ndjson"
    sample_rows = sum(1 for _ in sample.open("rb"))
    window_sql = (
        "SELECT time_bucket(INTERVAL '10 seconds', observed_at) AS window_start, district, "
        "CAST(sum(vehicles) AS DOUBLE) AS vehicles, avg(average_speed_kmh) AS speed, "
        "avg(occupancy_ratio) AS occupancy "
        f"FROM read_ndjson('{sample}', columns = {COLUMNS!r}) GROUP BY ALL"
    )
    decode_ms, _ = timed(con, window_sql, 3)
    duck_rate = sample_rows / (decode_ms / 1000.0)
    print()
    print(f"ingest, Polis: {ingest['events']:,} readings in {ingest['wall_s']:.1f} s wall, "
          f"{ingest['cpu_s']:.1f} s CPU: {ingest['events_per_s']:,.0f} events/s, "
          f"{ingest['events_per_cpu_s']:,.0f} events per CPU-second")
    print(f"decode + window, DuckDB on 1 thread: {sample_rows:,} readings in {decode_ms:.0f} ms: "
          f"{duck_rate:,.0f} events/s/core")
    print(f"Polis per CPU-second / DuckDB per core: {ingest['events_per_cpu_s'] / duck_rate:.2f}")

    con.execute("RESET threads")


def summarize_rounds(ratios_path):
    """Each query's median Polis / DuckDB ratio over the rounds recorded in `ratios_path`."""
    rounds = [json.loads(l) for l in Path(ratios_path).read_text().splitlines() if l.strip()]
    print()
    print(f"| query | Polis / DuckDB per round | median of {len(rounds)} rounds |")
    print("|---|---|---:|")
    worst = 0.0
    for sql in rounds[0]:
        per_round = [r[sql] for r in rounds]
        median = statistics.median(per_round)
        worst = max(worst, median)
        shown = " / ".join(f"{r:.2f}" for r in per_round)
        print(f"| `{sql}` | {shown} | {median:.2f} |")
    print()
    print(f"slowest median ratio: {worst:.2f} (target: at most 1.2)")


def main():
    if sys.argv[1] == "--rounds":
        summarize_rounds(sys.argv[2])
        return
    directory, queries, polis_jsonl = sys.argv[1:4]
    ratios_path = sys.argv[4] if len(sys.argv) > 4 else None
    polis = [json.loads(l) for l in Path(polis_jsonl).read_text().splitlines() if l.strip()]
    ingest = next((p["ingest"] for p in polis if "ingest" in p), None)
    polis_queries = [p for p in polis if "sql" in p]

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if ingest is not None:
        compare_ingest(con, directory, ingest)
    archive = Path(directory) / "archive" / "traffic"
    con.execute(f"CREATE VIEW traffic AS SELECT * FROM read_parquet('{archive}/**/*.parquet')")
    print()
    print("| query | rows | Polis median | DuckDB median | Polis / DuckDB |")
    print("|---|---:|---:|---:|---:|")
    worst = 0.0
    ratios = {}
    for sql, polis_run in zip(statements(queries), polis_queries):
        assert polis_run["sql"] == sql, (polis_run["sql"], sql)
        duck_ms, rows = timed(con, sql, RUNS)
        if rows != polis_run["rows"]:
            sys.exit(f"row counts differ ({polis_run['rows']} vs {rows}): {sql}")
        ratio = polis_run["median_ms"] / duck_ms
        worst = max(worst, ratio)
        short = " ".join(sql.split())
        ratios[short] = ratio
        print(f"| `{short}` | {rows} | {polis_run['median_ms']:.1f} ms | {duck_ms:.1f} ms | {ratio:.2f} |")
    print()
    print(f"slowest ratio: {worst:.2f} (target: at most 1.2)")
    if ratios_path is not None:
        with open(ratios_path, "a") as out:
            out.write(json.dumps(ratios) + "\n")


if __name__ == "__main__":
    main()
