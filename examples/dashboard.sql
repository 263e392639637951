-- Panels of an image inventory dashboard, as a BI tool would send them to `imageql serve`.

-- Images by status
SELECT status, count(*) AS images FROM images.images WHERE NOT is_public GROUP BY status ORDER BY status;

-- Storage cost by month of creation
SELECT date_trunc('month', i.created) AS month, round(sum(c.monthly_usd), 2) AS monthly_usd
FROM images.storage_costs c JOIN images.images i ON i.id = c.id
GROUP BY 1 ORDER BY 1;

-- Replicas per region
SELECT r['region'] AS region, count(*) AS replicas
FROM (SELECT unnest(regions) AS r FROM images.images WHERE NOT is_public)
GROUP BY 1 ORDER BY 2 DESC;
