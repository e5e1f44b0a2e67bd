-- The tables of one queue, created by queue_create (spec §1.6). {{docs}},
-- {{logs}} and {{metrics}} are replaced by the quoted, schema-qualified
-- table names built from a validated queue name. The statements are plain
-- CREATE TABLE (no IF NOT EXISTS): queue_create relies on the failure for
-- an existing queue.

-- UNIQUE(subject) of the 4.0.2 DDL is omitted: Postgres folds it into the
-- primary key anyway, so the table has the same single <q>__docs_pkey index.
CREATE TABLE {{docs}} (
    subject CHARACTER VARYING(50) NOT NULL PRIMARY KEY,
    version INTEGER DEFAULT 0,
    priority INTEGER DEFAULT 0,
    status INTEGER DEFAULT 0,
    attempts INTEGER DEFAULT 0,
    iterations BIGINT DEFAULT 0,
    next_iteration TIMESTAMP WITH TIME ZONE,
    lock_upgrade TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE,
    last_iteration TIMESTAMP WITH TIME ZONE,
    payload JSONB
);

CREATE TABLE {{logs}} (
    id SERIAL PRIMARY KEY,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    subject CHARACTER VARYING(50) NOT NULL,
    message CHARACTER VARYING(255) NOT NULL,
    details JSONB,
    ref_id VARCHAR
);

CREATE TABLE {{metrics}} (
    id SERIAL PRIMARY KEY,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    metric CHARACTER VARYING(50) NOT NULL,
    value BIGINT
);
