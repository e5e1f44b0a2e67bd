package backend

import (
	"context"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/fetchq/fetchq-proxy/internal/pgtest"
)

// TestFailingJobDoesNotHoldUpTheOthers: a maintenance job that fails
// with an error Postgres does not catch (the service role lacks a right on
// one queue's tables) is counted failed and retried once its claim
// expires, while the other jobs run; it used to be undone with its
// claim, come back first at every pass and stop every other job.
func TestFailingJobDoesNotHoldUpTheOthers(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	admin := db.Pool(t)
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store := New(Config{Logger: logger})
	for _, q := range []string{"a", "b"} {
		r, err := store.QueueCreate(ctx, PoolDB(admin), QueueParams{Queue: q})
		require.NoError(t, err)
		require.True(t, r.WasCreated)
	}
	role := "svc_jobs_" + db.Name
	_, err := admin.Exec(ctx, `CREATE ROLE `+role+` LOGIN;
GRANT USAGE ON SCHEMA fetchq, fetchq_data TO `+role+`;
GRANT ALL ON ALL TABLES IN SCHEMA fetchq TO `+role+`;
GRANT ALL ON ALL SEQUENCES IN SCHEMA fetchq, fetchq_data TO `+role+`;
GRANT ALL ON fetchq_data.b__docs, fetchq_data.b__logs, fetchq_data.b__metrics TO `+role+`;
GRANT ALL ON fetchq_data.a__docs TO `+role)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP OWNED BY "+role+"; DROP ROLE "+role) })
	cfg, err := pgxpool.ParseConfig(db.ConnString(role))
	require.NoError(t, err)
	svc, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(svc.Close)

	m, err := NewMaintainer(MaintainerConfig{Pool: svc, Store: store, Logger: logger})
	require.NoError(t, err)
	var failed int
	for range 2 {
		res, err := m.RunPass(ctx)
		require.NoError(t, err)
		failed += res.FailedJobs
	}
	require.Positive(t, failed, "a job on queue a cannot succeed without rights on its tables")
	rows, err := admin.Query(ctx, "SELECT queue, task, iterations, attempts FROM fetchq.jobs WHERE task <> 'mnt' AND queue IN ('a', 'b')")
	require.NoError(t, err)
	ran := map[string]int{}
	for rows.Next() {
		var q, task string
		var iterations, attempts int
		require.NoError(t, rows.Scan(&q, &task, &iterations, &attempts))
		if q == "b" {
			require.Positive(t, iterations, "job %s of queue b never ran", task)
		}
		if iterations > 0 {
			ran[q]++
		}
	}
	require.NoError(t, rows.Err())
	require.Positive(t, ran["b"])
}
