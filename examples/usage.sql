-- Image usage this month so far, from the images and the account's events:
--   imageql --sandbox -f examples/usage.sql
-- For a past month: linode.images.usage('2025-11-01', '2025-12-01').

-- Every image billed since the 1st: size, copies, hours and the charge
SELECT label, id, gb, copies, hours, usd, free, billed_from, billed_to
FROM linode.images.usage(date_trunc('month', now()), now())
ORDER BY id;

-- The five images that cost the most
SELECT label, id, gb * copies AS billed_gb, hours, usd
FROM linode.images.usage(date_trunc('month', now()), now())
ORDER BY usd DESC, id
LIMIT 5;

-- The total
SELECT count(*) AS images, sum(hours) AS hours, sum(usd) AS usd
FROM linode.images.usage(date_trunc('month', now()), now());
