-- W1 baseline: the same push as one hand-written INSERT on the proxy's
-- plain tables (fetchq_data.<queue>__docs), sent directly to Postgres.
-- Run with pgbench -M simple (the subject is substituted in a literal).
\set r random(1, 1000000000000000000)
INSERT INTO fetchq_data.bench__docs (subject, version, priority, status, attempts, iterations, next_iteration, created_at, payload)
VALUES ('c:client_id-:r', 0, 0, 1, 0, 0, now(), now(), '{}') ON CONFLICT DO NOTHING;
