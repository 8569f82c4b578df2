-- bench/run's INSERT baseline (issue 19): one deposit-like row in one statement, autocommit
-- (a durable commit each, as the server's synchronous_commit says). The id is time-ordered like
-- keymaster's (crypto::new_id), the code hash and holder hash are 32 random-looking bytes, the
-- SPKI is an Ed25519 one (44 bytes), the policy the default one's JSON.
INSERT INTO deposit_baseline (id, tenant_id, holder_hash, code_hash, code_format, label, kind,
    algorithm, spki, fingerprint, proven, policy, state, created_at, expires_at, max_retrievals,
    origin_network)
VALUES ('key_' || lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
            || substr(md5(random()::text), 1, 20),
        'ten_0190a1b2c3d4e5f60718293a4b5c6d7e',
        sha256(gen_random_uuid()::text::bytea),
        sha256(gen_random_uuid()::text::bytea),
        'words', 'bench', 'public', 'ed25519',
        decode('302a300506032b6570032100', 'hex') || sha256(gen_random_uuid()::text::bytea),
        'SHA256:' || encode(sha256(gen_random_uuid()::text::bytea), 'base64'),
        false, '{"max_retrievals":1}', 'active',
        (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
        (extract(epoch FROM clock_timestamp()) * 1000)::bigint + 86400000, 1, '127.0.0.0/24');
