-- Traffic per district over one window: vehicles counted, mean speed, detector occupancy, and a
-- congestion index from 0 (free flow) to 1 (standstill): the mean of occupancy and of the speed
-- shortfall against a 50 km/h free-flow speed.
SELECT 'district' AS entity_kind,
       district AS entity,
       CAST(SUM(vehicles) AS DOUBLE) AS vehicles,
       AVG(average_speed_kmh) AS average_speed_kmh,
       AVG(occupancy_ratio) AS occupancy_ratio,
       LEAST(1.0, GREATEST(0.0,
           (AVG(occupancy_ratio) + (1.0 - AVG(average_speed_kmh) / 50.0)) / 2.0)) AS congestion_index
FROM traffic
GROUP BY district
