package backend

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSplitStatements(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		in   string
		want []string
	}{
		{"simple", "SELECT 1; SELECT 2;", []string{"SELECT 1", "SELECT 2"}},
		{"no trailing semicolon", "SELECT 1", []string{"SELECT 1"}},
		{"comments dropped", "-- a; b\nSELECT 1; /* c; d */ SELECT 2", []string{"SELECT 1", "SELECT 2"}},
		{"quoted semicolons", `SELECT 'a;''b'; SELECT "x;y"`, []string{`SELECT 'a;''b'`, `SELECT "x;y"`}},
		{"dollar quoting", "CREATE FUNCTION f() AS $$ BEGIN; END; $$; DO $x$ a; $$ b; $x$", []string{"CREATE FUNCTION f() AS $$ BEGIN; END; $$", "DO $x$ a; $$ b; $x$"}},
		{"positional params are not tags", "SELECT $1; SELECT $2", []string{"SELECT $1", "SELECT $2"}},
		{"empty", " ;; -- x\n", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, splitStatements(tt.in))
		})
	}
}

func TestInfo(t *testing.T) {
	t.Parallel()
	require.Equal(t, "4.0.2", New(Config{}).Info().Version)
	require.Equal(t, "4.0.0", New(Config{Version: "4.0.0"}).Info().Version)
}

func TestInitDestroy(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	// The template already has the schema: init reports it was there.
	r, err := tb.store.Init(tb.ctx, tb.db)
	require.NoError(t, err)
	require.False(t, r.WasInitialized)

	d, err := tb.store.Destroy(tb.ctx, tb.db)
	require.NoError(t, err)
	require.Equal(t, Effects{{Kind: EffectResetAll}}, d.Effects)
	require.Zero(t, tb.count(t, "SELECT count(*) FROM pg_namespace WHERE nspname IN ('fetchq', 'fetchq_data')"))

	// First init on an empty database: true; then false, idempotently.
	r, err = tb.store.Init(tb.ctx, tb.db)
	require.NoError(t, err)
	require.True(t, r.WasInitialized)
	for range 2 {
		r, err = tb.store.Init(tb.ctx, tb.db)
		require.NoError(t, err)
		require.False(t, r.WasInitialized)
	}

	// Exactly one lgp job, id 1, with the seed settings.
	var id int
	var task, queue, settings string
	require.NoError(t, tb.pool.QueryRow(tb.ctx, "SELECT id, task, queue, settings::text FROM fetchq.jobs").Scan(&id, &task, &queue, &settings))
	require.Equal(t, 1, id)
	require.Equal(t, "lgp", task)
	require.Equal(t, "*", queue)
	require.JSONEq(t, `{"delay":"3s","duration":"5m"}`, settings)
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq.jobs WHERE next_iteration IS NOT NULL AND last_iteration IS NULL AND attempts = 0 AND iterations = 0 AND payload = '{}'"))

	// Init repairs what is missing.
	_, err = tb.pool.Exec(tb.ctx, "DELETE FROM fetchq.jobs; DROP TABLE fetchq.metrics")
	require.NoError(t, err)
	r, err = tb.store.Init(tb.ctx, tb.db)
	require.NoError(t, err)
	require.False(t, r.WasInitialized)
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM fetchq.jobs WHERE task = 'lgp'"))
	require.Equal(t, 0, tb.count(t, "SELECT count(*) FROM fetchq.metrics"))

	// Through Invoke destroy returns NULL, as 4.0.2 does.
	res, err := tb.store.Invoke(tb.ctx, tb.db, "destroy_with_terrible_consequences()", nil)
	require.NoError(t, err)
	require.Equal(t, []string{"was_destroyed"}, res.Columns)
	require.Equal(t, [][][]byte{{nil}}, res.Rows)
	res, err = tb.store.Invoke(tb.ctx, tb.db, "init()", nil)
	require.NoError(t, err)
	require.Equal(t, [][][]byte{{[]byte("t")}}, res.Rows)
}

// columnsOf describes a table as "name type default" lines.
func (tb *testBundle) columnsOf(t *testing.T, schema, table string) []string {
	t.Helper()
	rows, err := tb.pool.Query(tb.ctx, `SELECT column_name || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' ||
		CASE WHEN a.attnotnull THEN 'not null ' ELSE '' END || coalesce(column_default, '-')
		FROM information_schema.columns c
		JOIN pg_attribute a ON a.attrelid = format('%I.%I', c.table_schema, c.table_name)::regclass AND a.attname = c.column_name
		WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position`, schema, table)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}

// indexesOf returns "name: definition" of a table's indexes, by name.
func (tb *testBundle) indexesOf(t *testing.T, schema, table string) []string {
	t.Helper()
	rows, err := tb.pool.Query(tb.ctx, "SELECT indexname || ': ' || indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 ORDER BY indexname", schema, table)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}

// TestSchemaMatchesSpec pins the system tables of spec §1.2-1.5.
func TestSchemaMatchesSpec(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	require.Equal(t, []string{
		"id integer not null nextval('fetchq.queues_id_seq'::regclass)",
		"created_at timestamp with time zone -",
		"name character varying(40) not null -",
		"is_active boolean true",
		"current_version integer 0",
		"max_attempts integer 5",
		"logs_retention character varying(25) '24h'::character varying",
		"metrics_retention jsonb '[]'::jsonb",
		"config jsonb '{}'::jsonb",
	}, tb.columnsOf(t, "fetchq", "queues"))
	require.Equal(t, []string{
		"id integer not null nextval('fetchq.metrics_id_seq'::regclass)",
		"queue character varying(40) not null -",
		"metric character varying(40) not null -",
		"value bigint not null -",
		"updated_at timestamp with time zone -",
	}, tb.columnsOf(t, "fetchq", "metrics"))
	require.Equal(t, []string{
		"id uuid gen_random_uuid()",
		"created_at timestamp with time zone -",
		"queue character varying(40) not null -",
		"metric character varying(40) not null -",
		"increment bigint -",
		"reset bigint -",
	}, tb.columnsOf(t, "fetchq", "metrics_writes"))
	require.Equal(t, []string{
		"id integer not null nextval('fetchq.jobs_id_seq'::regclass)",
		"task character varying(40) not null -",
		"queue character varying(40) not null -",
		"attempts integer 0",
		"iterations bigint 0",
		"next_iteration timestamp with time zone -",
		"last_iteration timestamp with time zone -",
		"settings jsonb -",
		"payload jsonb -",
	}, tb.columnsOf(t, "fetchq", "jobs"))

	require.Equal(t, []string{
		"queues_pkey: CREATE UNIQUE INDEX queues_pkey ON fetchq.queues USING btree (id)",
	}, tb.indexesOf(t, "fetchq", "queues"))
	require.Equal(t, []string{
		"__fetchq_metrics_queue_idx: CREATE INDEX __fetchq_metrics_queue_idx ON fetchq.metrics USING btree (queue)",
		// Added by this implementation (spec §7): the key the counter upserts use.
		"__fetchq_metrics_queue_metric_idx: CREATE UNIQUE INDEX __fetchq_metrics_queue_metric_idx ON fetchq.metrics USING btree (queue, metric)",
		"metrics_pkey: CREATE UNIQUE INDEX metrics_pkey ON fetchq.metrics USING btree (id)",
	}, tb.indexesOf(t, "fetchq", "metrics"))
	require.Equal(t, []string{
		"__fetchq_metrics_writes_increment_idx: CREATE INDEX __fetchq_metrics_writes_increment_idx ON fetchq.metrics_writes USING btree (queue, metric) WHERE (increment IS NOT NULL)",
		"__fetchq_metrics_writes_reset_idx: CREATE INDEX __fetchq_metrics_writes_reset_idx ON fetchq.metrics_writes USING btree (queue, metric) WHERE (reset IS NOT NULL)",
	}, tb.indexesOf(t, "fetchq", "metrics_writes"))
	require.Equal(t, []string{
		"__fetchq_jobs_task_idx: CREATE INDEX __fetchq_jobs_task_idx ON fetchq.jobs USING btree (task, next_iteration, iterations) WHERE (iterations < 5)",
		"__fetchq_jobs_task_queue_idx: CREATE UNIQUE INDEX __fetchq_jobs_task_queue_idx ON fetchq.jobs USING btree (task, queue)",
		"jobs_pkey: CREATE UNIQUE INDEX jobs_pkey ON fetchq.jobs USING btree (id)",
	}, tb.indexesOf(t, "fetchq", "jobs"))

	// The registry trigger and the three trigger functions.
	require.Equal(t, 1, tb.count(t, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'fetchq.queues'::regclass AND tgname = 'fetchq_trigger_sys_queues_insert'"))
	require.Equal(t, 3, tb.count(t, "SELECT count(*) FROM pg_proc WHERE pronamespace = 'fetchq'::regnamespace AND proname IN ('trigger_notify_as_json', 'trigger_docs_notify_insert', 'trigger_docs_notify_update')"))
	// No extension needed.
	require.Zero(t, tb.count(t, "SELECT count(*) FROM pg_extension WHERE extname = 'uuid-ossp'"))
}

// TestQueueTablesMatchSpec pins the per-queue tables and indexes of §1.6.
func TestQueueTablesMatchSpec(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.createQueue(t, "foo")

	require.Equal(t, []string{
		"subject character varying(50) not null -",
		"version integer 0",
		"priority integer 0",
		"status integer 0",
		"attempts integer 0",
		"iterations bigint 0",
		"next_iteration timestamp with time zone -",
		"lock_upgrade timestamp with time zone -",
		"created_at timestamp with time zone -",
		"last_iteration timestamp with time zone -",
		"payload jsonb -",
	}, tb.columnsOf(t, "fetchq_data", "foo__docs"))
	require.Equal(t, []string{
		"id integer not null nextval('fetchq_data.foo__logs_id_seq'::regclass)",
		"created_at timestamp with time zone now()",
		"subject character varying(50) not null -",
		"message character varying(255) not null -",
		"details jsonb -",
		"ref_id character varying -",
	}, tb.columnsOf(t, "fetchq_data", "foo__logs"))
	require.Equal(t, []string{
		"id integer not null nextval('fetchq_data.foo__metrics_id_seq'::regclass)",
		"created_at timestamp with time zone now()",
		"metric character varying(50) not null -",
		"value bigint -",
	}, tb.columnsOf(t, "fetchq_data", "foo__metrics"))

	idx := tb.indexesOf(t, "fetchq_data", "foo__docs")
	require.Equal(t, []string{
		"fetchq_foo_for_dod_idx: CREATE INDEX fetchq_foo_for_dod_idx ON fetchq_data.foo__docs USING btree (next_iteration, attempts) WHERE ((lock_upgrade IS NULL) AND (status = 2) AND (attempts >= 5))",
		"fetchq_foo_for_orp_idx: CREATE INDEX fetchq_foo_for_orp_idx ON fetchq_data.foo__docs USING btree (next_iteration, attempts) WHERE ((lock_upgrade IS NULL) AND (status = 2) AND (attempts < 5))",
		"fetchq_foo_for_pick_0_idx: CREATE INDEX fetchq_foo_for_pick_0_idx ON fetchq_data.foo__docs USING btree (priority DESC, next_iteration, attempts) WHERE ((lock_upgrade IS NULL) AND (status = 1) AND (version = 0))",
		"fetchq_foo_for_pnd_idx: CREATE INDEX fetchq_foo_for_pnd_idx ON fetchq_data.foo__docs USING btree (next_iteration, attempts) WHERE ((lock_upgrade IS NULL) AND (status = 0))",
		"fetchq_foo_for_ups_idx: CREATE INDEX fetchq_foo_for_ups_idx ON fetchq_data.foo__docs USING btree (subject) WHERE ((lock_upgrade IS NULL) AND (status <> 2))",
		"foo__docs_pkey: CREATE UNIQUE INDEX foo__docs_pkey ON fetchq_data.foo__docs USING btree (subject)",
	}, idx)
	for _, s := range idx {
		require.False(t, strings.Contains(s, `"`), "index names need no quoting: %s", s)
	}
}
