-- Each delivery names its endpoint: the scheme and authority of a webhook URL (lower-cased), or
-- 'smtp' for e-mail. The dispatcher bounds the deliveries in flight per endpoint and pauses an
-- endpoint that keeps failing, so that one slow or dead receiver delays only its own queue.
ALTER TABLE deliveries ADD COLUMN endpoint TEXT NOT NULL DEFAULT '';
UPDATE deliveries SET endpoint = CASE channel WHEN 'email' THEN 'smtp'
    ELSE lower(coalesce(substring(target from '^[^:/?#]+://[^/?#]*'), target)) END;
-- The claim walks due deliveries in time order and skips endpoints that are full or paused: with
-- the endpoint and the lease in the index, a skipped row costs no read of the table.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries(next_attempt_at, endpoint, claimed_until)
    WHERE status = 'pending';
