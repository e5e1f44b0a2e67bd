-- Fetchq system schema, as created by fetchq.init() in Fetchq 4.0.2
-- (spec §1.1-1.5), without the uuid-ossp extension: uuid defaults use the
-- core gen_random_uuid() (PostgreSQL 13+). Every statement is idempotent.
-- Store.Init runs the statements in order, in one transaction.

CREATE SCHEMA IF NOT EXISTS fetchq;

CREATE SCHEMA IF NOT EXISTS fetchq_data;

-- fetchq_on_change: a JSON description of every change to fetchq.queues
-- (spec §3.6), delivered to LISTENers on commit.
CREATE OR REPLACE FUNCTION fetchq.trigger_notify_as_json() RETURNS TRIGGER AS $$
DECLARE
    rec RECORD;
    payload TEXT;
    new_data TEXT;
    old_data TEXT;
BEGIN
    CASE TG_OP
    WHEN 'INSERT' THEN
        rec := NEW;
        new_data := row_to_json(NEW);
        old_data := 'null';
    WHEN 'UPDATE' THEN
        rec := NEW;
        new_data := row_to_json(NEW);
        old_data := row_to_json(OLD);
    WHEN 'DELETE' THEN
        rec := OLD;
        old_data := row_to_json(OLD);
        new_data := 'null';
    ELSE
        RAISE EXCEPTION 'Unknown TG_OP: "%". Should not occur!', TG_OP;
    END CASE;

    payload := ''
        || '{'
        || '"timestamp":"' || CURRENT_TIMESTAMP || '",'
        || '"operation":"' || TG_OP             || '",'
        || '"schema":"'    || TG_TABLE_SCHEMA   || '",'
        || '"table":"'     || TG_TABLE_NAME     || '",'
        || '"new_data":'   || new_data          || ','
        || '"old_data":'   || old_data
        || '}';

    PERFORM pg_notify('fetchq_on_change', payload);
    RETURN rec;
END; $$
LANGUAGE plpgsql;

-- fetchq__<q>__pnd|pln on insert into a docs table, once
-- fetchq.queue_enable_notify(q) installed the trigger (spec §3.6). The
-- event is time based: pln when next_iteration is in the future.
CREATE OR REPLACE FUNCTION fetchq.trigger_docs_notify_insert() RETURNS TRIGGER AS $$
DECLARE
    VAR_event VARCHAR = 'pnd';
BEGIN
    IF NEW.next_iteration > NOW() THEN
        VAR_event = 'pln';
    END IF;
    -- The table is <q>__docs: strip the suffix only (4.0.2 replaced every
    -- occurrence of '__docs').
    PERFORM pg_notify('fetchq__' || left(TG_TABLE_NAME, -6) || '__' || VAR_event, NEW.subject);
    RETURN NEW;
END; $$
LANGUAGE plpgsql;

-- fetchq__<q>__<event> on every update of a docs row, the event named after
-- the new status.
CREATE OR REPLACE FUNCTION fetchq.trigger_docs_notify_update() RETURNS TRIGGER AS $$
DECLARE
    VAR_event VARCHAR = 'null';
BEGIN
    CASE NEW.status
    WHEN 0 THEN VAR_event = 'pln';
    WHEN 1 THEN VAR_event = 'pnd';
    WHEN 2 THEN VAR_event = 'act';
    WHEN 3 THEN VAR_event = 'cpl';
    WHEN -1 THEN VAR_event = 'kll';
    ELSE NULL;
    END CASE;
    PERFORM pg_notify('fetchq__' || left(TG_TABLE_NAME, -6) || '__' || VAR_event, NEW.subject);
    RETURN NEW;
END; $$
LANGUAGE plpgsql;

-- Queues registry (spec §1.2). No unique constraint on name, as in 4.0.2;
-- the operations serialise registry changes with an advisory lock.
CREATE TABLE IF NOT EXISTS fetchq.queues (
    id SERIAL PRIMARY KEY,
    created_at TIMESTAMP WITH TIME ZONE,
    name CHARACTER VARYING(40) NOT NULL,
    is_active BOOLEAN DEFAULT true,
    current_version INTEGER DEFAULT 0,
    max_attempts INTEGER DEFAULT 5,
    logs_retention VARCHAR(25) DEFAULT '24h',
    metrics_retention JSONB DEFAULT '[]',
    config JSONB DEFAULT '{}'
);

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger
        WHERE tgrelid = 'fetchq.queues'::regclass
          AND tgname = 'fetchq_trigger_sys_queues_insert'
    ) THEN
        CREATE TRIGGER fetchq_trigger_sys_queues_insert AFTER INSERT OR UPDATE OR DELETE
        ON fetchq.queues
        FOR EACH ROW EXECUTE PROCEDURE fetchq.trigger_notify_as_json();
    END IF;
END $$;

-- Packed counters (spec §1.3).
CREATE TABLE IF NOT EXISTS fetchq.metrics (
    id SERIAL PRIMARY KEY,
    queue CHARACTER VARYING(40) NOT NULL,
    metric CHARACTER VARYING(40) NOT NULL,
    value BIGINT NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE
);

CREATE INDEX IF NOT EXISTS __fetchq_metrics_queue_idx ON fetchq.metrics USING btree(queue);

-- Counter log (spec §1.4).
CREATE TABLE IF NOT EXISTS fetchq.metrics_writes (
    id UUID DEFAULT gen_random_uuid(),
    created_at TIMESTAMP WITH TIME ZONE,
    queue CHARACTER VARYING(40) NOT NULL,
    metric CHARACTER VARYING(40) NOT NULL,
    increment BIGINT,
    reset BIGINT
);

CREATE INDEX IF NOT EXISTS __fetchq_metrics_writes_reset_idx ON fetchq.metrics_writes (queue, metric) WHERE (reset IS NOT NULL);

CREATE INDEX IF NOT EXISTS __fetchq_metrics_writes_increment_idx ON fetchq.metrics_writes (queue, metric) WHERE (increment IS NOT NULL);

-- Maintenance schedule (spec §1.5).
CREATE TABLE IF NOT EXISTS fetchq.jobs (
    id SERIAL PRIMARY KEY,
    task CHARACTER VARYING(40) NOT NULL,
    queue CHARACTER VARYING(40) NOT NULL,
    attempts INTEGER DEFAULT 0,
    iterations BIGINT DEFAULT 0,
    next_iteration TIMESTAMP WITH TIME ZONE,
    last_iteration TIMESTAMP WITH TIME ZONE,
    settings JSONB,
    payload JSONB
);

CREATE UNIQUE INDEX IF NOT EXISTS __fetchq_jobs_task_queue_idx ON fetchq.jobs USING btree(task, queue);

CREATE INDEX IF NOT EXISTS __fetchq_jobs_task_idx ON fetchq.jobs USING btree(task, next_iteration, iterations) WHERE (iterations < 5);

-- The log pack job. WHERE NOT EXISTS keeps a repeated init from consuming
-- a jobs id.
INSERT INTO fetchq.jobs (task, queue, next_iteration, last_iteration, attempts, iterations, settings, payload)
SELECT 'lgp', '*', NOW(), NULL, 0, 0, '{"delay":"3s", "duration":"5m"}', '{}'
WHERE NOT EXISTS (SELECT 1 FROM fetchq.jobs WHERE task = 'lgp' AND queue = '*')
ON CONFLICT DO NOTHING;
