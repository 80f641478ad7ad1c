-- Traffic per district over one window: vehicles counted, mean speed and detector occupancy.
SELECT 'district' AS entity_kind,
       district AS entity,
       CAST(SUM(vehicles) AS DOUBLE) AS vehicles,
       AVG(average_speed_kmh) AS average_speed_kmh,
       AVG(occupancy_ratio) AS occupancy_ratio
FROM traffic
GROUP BY district
