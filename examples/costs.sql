-- Image storage cost report. Linode bills custom images per GB and month in every region that
-- holds a copy; recovery images are free. The rate lives in the provider file.
--   imageql --sandbox -f examples/costs.sql

-- Every private image, most expensive first.
SELECT id, label, type, copies, gb, monthly_usd, hourly_usd
FROM linode.images.storage_costs
ORDER BY monthly_usd DESC, id;

-- Totals by type.
SELECT type, count(*) AS images, round(sum(gb), 2) AS gb, round(sum(monthly_usd), 2) AS monthly_usd
FROM linode.images.storage_costs
GROUP BY type
ORDER BY monthly_usd DESC;

-- What each tag costs per month (an image with two tags counts for both).
SELECT tag, count(*) AS images, round(sum(c.monthly_usd), 2) AS monthly_usd
FROM (SELECT id, unnest(tags) AS tag FROM linode.images.images WHERE NOT is_public) t
JOIN linode.images.storage_costs c ON c.id = t.id
GROUP BY tag
ORDER BY monthly_usd DESC, tag;

-- Where the money goes: cost per region (each copy costs its share).
SELECT r['region'] AS region, count(*) AS copies, round(sum(c.monthly_usd / c.copies), 2) AS monthly_usd
FROM (SELECT id, unnest(regions) AS r FROM linode.images.images WHERE NOT is_public) i
JOIN linode.images.storage_costs c ON c.id = i.id
GROUP BY 1
ORDER BY monthly_usd DESC, region;
