-- Energy per district over one window: load (the sum of each meter's mean power), the lowest and
-- the mean voltage seen, and how many meters reported.
SELECT 'district' AS entity_kind,
       district AS entity,
       SUM(meter_power_kw) AS load_kw,
       MIN(meter_min_voltage_v) AS min_voltage_v,
       AVG(meter_voltage_v) AS average_voltage_v,
       CAST(COUNT(*) AS DOUBLE) AS meters_reporting
FROM (
    SELECT district,
           device_id,
           AVG(active_power_kw) AS meter_power_kw,
           MIN(voltage_v) AS meter_min_voltage_v,
           AVG(voltage_v) AS meter_voltage_v
    FROM energy
    GROUP BY district, device_id
)
GROUP BY district
