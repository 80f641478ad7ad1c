-- Public transport per route over one window: vehicles reporting and their mean delay.
SELECT 'route' AS entity_kind,
       route_id AS entity,
       CAST(COUNT(DISTINCT device_id) AS DOUBLE) AS active_vehicles,
       AVG(delay_s) AS average_delay_s
FROM transport
GROUP BY route_id
