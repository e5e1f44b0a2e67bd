-- W2 baseline, hand-written per-call SQL on the proxy's plain tables, sent
-- directly to Postgres: the pick is one UPDATE of the first due pending
-- document (FOR UPDATE SKIP LOCKED, the proxy's order), the complete one
-- UPDATE. Run with pgbench -M simple.
UPDATE fetchq_data.bench__docs d
   SET status = 2, next_iteration = now() + interval '5 minutes', attempts = d.attempts + 1
 WHERE d.subject IN (
       SELECT subject FROM fetchq_data.bench__docs
        WHERE lock_upgrade IS NULL AND status = 1 AND version = 0 AND next_iteration <= now()
        ORDER BY priority DESC, next_iteration ASC, attempts ASC
        LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING d.subject AS subject \gset
UPDATE fetchq_data.bench__docs
   SET status = 3, attempts = 0, iterations = iterations + 1, last_iteration = now(), next_iteration = '2970-01-01 00:00:00+00'
 WHERE subject = ':subject' AND status = 2;
