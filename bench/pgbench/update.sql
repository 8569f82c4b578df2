-- bench/run's UPDATE baseline (issue 19): one retrieval-like change of a random pre-filled row
-- (setup.sql) in one statement, by primary key, with RETURNING, autocommit. The columns it sets
-- are not indexed, as the counters and state a retrieval changes; pgbench variable: rows.
\set n random(1, :rows)
UPDATE retrieve_baseline
   SET retrievals = retrievals + 1, state = 'retrieved',
       ended_at = (extract(epoch FROM clock_timestamp()) * 1000)::bigint
 WHERE id = 'key_' || lpad(to_hex(:n::bigint), 32, '0')
RETURNING id, tenant_id, kind, algorithm, spki, policy, state, expires_at;
