package backend

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/fetchq/fetchq-proxy/internal/pgtest"
)

// TestMain runs the package's tests against one throw-away Postgres; every
// database starts from a template holding the Fetchq schema (SchemaSQL).
func TestMain(m *testing.M) {
	pgtest.MainWith(m, pgtest.Options{TemplateSQL: SchemaSQL()})
}

// testBundle is what most tests need: a fresh database with the schema, a
// Store and the pool-backed DB.
type testBundle struct {
	ctx   context.Context
	store *Store
	pool  *pgxpool.Pool
	db    DB
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	pool := pgtest.NewDB(t).Pool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return &testBundle{ctx: ctx, store: New(Config{Logger: logger}), pool: pool, db: PoolDB(pool)}
}

// testWriter sends log lines to the test's log, shown when it fails or
// with -v.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// createQueue creates a queue and fails the test unless it was created.
func (tb *testBundle) createQueue(t *testing.T, name string) int32 {
	t.Helper()
	r, err := tb.store.QueueCreate(tb.ctx, tb.db, QueueParams{Queue: name})
	require.NoError(t, err)
	require.True(t, r.WasCreated, "queue_create(%q)", name)
	require.NotNil(t, r.QueueID)
	return *r.QueueID
}

// push pushes a document and requires it to be queued.
func (tb *testBundle) push(t *testing.T, q, subject string, version, priority int32, next Time, payload string) {
	t.Helper()
	r, err := tb.store.DocPush(tb.ctx, tb.db, DocPushParams{Queue: q, Subject: subject, Version: version, Priority: priority, NextIteration: next, Payload: payload})
	require.NoError(t, err)
	require.EqualValues(t, 1, r.QueuedDocs, "doc_push(%q, %q)", q, subject)
}

// pushPending pushes n due documents with push-many, row(i) giving each
// one's (subject, priority, payload) tuple, and requires them all queued.
func (tb *testBundle) pushPending(t *testing.T, q string, n int, row func(i int) string) {
	t.Helper()
	var data strings.Builder
	for i := range n {
		if i > 0 {
			data.WriteString(", ")
		}
		data.WriteString(row(i))
	}
	r, err := tb.store.DocPushMany(tb.ctx, tb.db, DocPushManyParams{Queue: q, NextIteration: NowMinus("1s"), Data: data.String()})
	require.NoError(t, err)
	require.EqualValues(t, n, r.QueuedDocs)
}

// pick picks up to limit documents of version 0 with a 5 minute lock.
func (tb *testBundle) pick(t *testing.T, q string, limit int32) []Doc {
	t.Helper()
	r, err := tb.store.DocPick(tb.ctx, tb.db, DocPickParams{Queue: q, Limit: &limit, Duration: ptr("5m")})
	require.NoError(t, err)
	return r.Docs
}

// subjects returns the subjects of docs, in order.
func subjects(docs []Doc) []string {
	out := make([]string, len(docs))
	for i, d := range docs {
		out[i] = d.Subject
	}
	return out
}

// docRow is a docs table row as the tests inspect it.
type docRow struct {
	Subject       string
	Version       int32
	Priority      int32
	Status        int32
	Attempts      int32
	Iterations    int64
	Payload       *string
	NextIteration *time.Time
	LastIteration *time.Time
	LockUpgrade   *time.Time
	CreatedAt     *time.Time
}

// getDoc reads a document directly from its table; ok false if missing.
func (tb *testBundle) getDoc(t *testing.T, q, subject string) (docRow, bool) {
	t.Helper()
	var d docRow
	rows, err := tb.pool.Query(tb.ctx, `SELECT subject, version, priority, status, attempts, iterations, payload::text,
		next_iteration, last_iteration, lock_upgrade, created_at FROM fetchq_data.`+q+`__docs WHERE subject = $1`, subject)
	require.NoError(t, err)
	defer rows.Close()
	if !rows.Next() {
		require.NoError(t, rows.Err())
		return d, false
	}
	require.NoError(t, rows.Scan(&d.Subject, &d.Version, &d.Priority, &d.Status, &d.Attempts, &d.Iterations, &d.Payload,
		&d.NextIteration, &d.LastIteration, &d.LockUpgrade, &d.CreatedAt))
	return d, true
}

// mustDoc is getDoc that requires the document to exist.
func (tb *testBundle) mustDoc(t *testing.T, q, subject string) docRow {
	t.Helper()
	d, ok := tb.getDoc(t, q, subject)
	require.True(t, ok, "document %s/%s", q, subject)
	return d
}

// count returns SELECT count(*) of a query.
func (tb *testBundle) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, sql, args...).Scan(&n))
	return n
}

// statuses returns the status of every document of queue q by subject.
func (tb *testBundle) statuses(t *testing.T, q string) map[string]int {
	t.Helper()
	status := map[string]int{}
	rows, err := tb.pool.Query(tb.ctx, "SELECT subject, status FROM fetchq_data."+q+"__docs")
	require.NoError(t, err)
	for rows.Next() {
		var s string
		var st int
		require.NoError(t, rows.Scan(&s, &st))
		status[s] = st
	}
	require.NoError(t, rows.Err())
	return status
}

// effect is a compact form of an EffectAdd for assertions.
func adds(queue string, kv ...any) Effects {
	var e Effects
	for i := 0; i < len(kv); i += 2 {
		e = append(e, Effect{Kind: EffectAdd, Queue: queue, Metric: kv[i].(string), Delta: int64(kv[i+1].(int))})
	}
	return e
}
