-- Ad-hoc operator queries for scripts/bench-analytics.sh, run by Polis and by DuckDB over the
-- same archived Parquet files of the `traffic` table. Each statement ends with `;`.

-- How much data is there?
SELECT count(*) AS readings FROM traffic;

-- Traffic per district over the whole archive.
SELECT district, sum(vehicles) AS vehicles, avg(average_speed_kmh) AS speed
FROM traffic GROUP BY district ORDER BY district;

-- Twenty seconds, per district.
SELECT district, count(*) AS readings, sum(vehicles) AS vehicles
FROM traffic
WHERE observed_at >= '2026-11-01T00:00:30Z' AND observed_at < '2026-11-01T00:00:50Z'
GROUP BY district ORDER BY district;

-- The per-minute series of the whole city.
SELECT date_trunc('minute', observed_at) AS minute, sum(vehicles) AS vehicles
FROM traffic GROUP BY 1 ORDER BY 1;

-- The ten detectors that saw the most congestion.
SELECT device_id, avg(occupancy_ratio) AS occupancy, min(average_speed_kmh) AS slowest
FROM traffic GROUP BY device_id ORDER BY occupancy DESC, device_id LIMIT 10;

-- How often was a detector slow and busy at once?
SELECT count(*) AS congested_readings
FROM traffic WHERE average_speed_kmh < 20 AND occupancy_ratio > 0.8;

-- How many detectors reported, per lane?
SELECT lane_id, count(DISTINCT device_id) AS detectors FROM traffic GROUP BY lane_id ORDER BY lane_id;
