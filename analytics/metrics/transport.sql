-- Public transport per route over one window: vehicles reporting, their mean and worst delay, and
-- mean passenger occupancy.
SELECT 'route' AS entity_kind,
       route_id AS entity,
       CAST(COUNT(DISTINCT device_id) AS DOUBLE) AS active_vehicles,
       AVG(delay_s) AS average_delay_s,
       MAX(delay_s) AS max_delay_s,
       AVG(occupancy_ratio) AS occupancy_ratio
FROM transport
GROUP BY route_id
