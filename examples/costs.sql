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
SELECT tag, count(*) AS images, sum(monthly_usd) AS monthly_usd
FROM (SELECT unnest(tags) AS tag, monthly_usd FROM linode.images.storage_costs) AS tagged
GROUP BY tag
ORDER BY monthly_usd DESC, tag;

-- Where the money goes: what the copies in each region cost (a copy bills while available).
SELECT region, count(*) AS copies, count(*) FILTER (WHERE billed) AS billed, sum(monthly_usd) AS monthly_usd
FROM linode.images.storage_costs_by_region
GROUP BY region
ORDER BY monthly_usd DESC, region;
