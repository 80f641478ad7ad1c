-- City-wide KPIs over one window: vehicles counted per minute, mean traffic speed, total load in
-- MW, the share of buses and trams on time (mean delay at most 3 minutes) and devices reporting.
-- `metric_window` is the one-row table of the window being computed (window_start, window_end,
-- size_s).
SELECT 'city' AS entity_kind,
       'city' AS entity,
       (SELECT CAST(SUM(vehicles) AS DOUBLE) FROM traffic) * 60.0
           / (SELECT size_s FROM metric_window) AS vehicles_per_min,
       (SELECT AVG(average_speed_kmh) FROM traffic) AS average_speed_kmh,
       (SELECT SUM(meter_power_kw) / 1000.0
          FROM (SELECT AVG(active_power_kw) AS meter_power_kw FROM energy GROUP BY device_id)) AS load_mw,
       (SELECT AVG(CASE WHEN vehicle_delay_s <= 180.0 THEN 1.0 ELSE 0.0 END)
          FROM (SELECT AVG(delay_s) AS vehicle_delay_s FROM transport GROUP BY device_id)) AS buses_on_time_ratio,
       (SELECT CAST(COUNT(DISTINCT device_id) AS DOUBLE)
          FROM (SELECT device_id FROM traffic
                UNION ALL SELECT device_id FROM energy
                UNION ALL SELECT device_id FROM transport)) AS devices_reporting
