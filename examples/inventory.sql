-- Image inventory: what the account holds, by status, type and vendor; the largest private
-- images; tag and region usage. Run it with:
--   imageql --sandbox -f examples/inventory.sql

-- Images by status and type (private images only: public ones are Linode's).
SELECT status, type, count(*) AS images, sum(size) AS total_mb
FROM linode.images.images
WHERE NOT is_public
GROUP BY status, type
ORDER BY images DESC, status, type;

-- Public images by vendor, with how many are deprecated.
SELECT vendor,
       count(*) AS images,
       sum(CASE WHEN deprecated THEN 1 ELSE 0 END) AS deprecated,
       min(eol) AS first_eol
FROM linode.images.images
WHERE is_public
GROUP BY vendor
ORDER BY images DESC, vendor;

-- The ten largest private images, with the regions that hold a copy.
SELECT id, label, size AS size_mb, cardinality(regions) AS copies, created
FROM linode.images.images
WHERE NOT is_public
ORDER BY size DESC
LIMIT 10;

-- Tag usage across private images.
SELECT tag, count(*) AS images, sum(size) AS total_mb
FROM (SELECT unnest(tags) AS tag, size FROM linode.images.images WHERE NOT is_public)
GROUP BY tag
ORDER BY images DESC, tag;

-- Replicas by region and replication status.
SELECT r['region'] AS region, r['status'] AS status, count(*) AS images
FROM (SELECT unnest(regions) AS r FROM linode.images.images WHERE NOT is_public)
GROUP BY 1, 2
ORDER BY region, status;

-- Recovery images (free copies of deleted instances) and when they expire.
SELECT id, label, created, expiry
FROM linode.images.images
WHERE type = 'automatic' AND expiry IS NOT NULL
ORDER BY expiry;
