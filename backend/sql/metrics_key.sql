-- The unique key of fetchq.metrics (queue, metric), which 4.0.2 lacks (spec
-- §1.3, §6.11; §7 allows adding it). The proxy's counters are upserts on
-- it, so concurrent writers can no longer create duplicate rows.
-- Store.Init runs these statements after schema.sql; Metrics.Flush runs
-- them when it finds the key missing. Both are idempotent.

-- Merge the duplicates an older database may hold into the row with the
-- lowest id: the values are summed (duplicates come from concurrent first
-- increments, each of which inserted its own delta) and the latest
-- updated_at is kept.
DO $$
BEGIN
    IF to_regclass('fetchq.__fetchq_metrics_queue_metric_idx') IS NULL THEN
        LOCK TABLE fetchq.metrics IN SHARE ROW EXCLUSIVE MODE;
        WITH d AS (
            SELECT id,
                   min(id) OVER w AS keep,
                   sum(value) OVER w AS total,
                   max(updated_at) OVER w AS last,
                   count(*) OVER w AS n
            FROM fetchq.metrics
            WINDOW w AS (PARTITION BY queue, metric)
        ),
        u AS (
            UPDATE fetchq.metrics m SET value = d.total, updated_at = d.last
            FROM d WHERE m.id = d.id AND d.id = d.keep AND d.n > 1
        )
        DELETE FROM fetchq.metrics m USING d WHERE m.id = d.id AND d.id <> d.keep;
    END IF;
END $$;

CREATE UNIQUE INDEX IF NOT EXISTS __fetchq_metrics_queue_metric_idx ON fetchq.metrics (queue, metric);
