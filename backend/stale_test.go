package backend

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/fetchq/fetchq-proxy/internal/pgtest"
)

// TestBatcherStalePoolConnections: every idle connection of the service
// pool was ended by the server (as after a Postgres restart, or
// pg_terminate_backend); the next batched calls still succeed, on fresh
// connections, instead of failing on the dead ones.
func TestBatcherStalePoolConnections(t *testing.T) {
	db := pgtest.NewDB(t)
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(db.ConnString(""))
	require.NoError(t, err)
	cfg.MaxConns = 3
	cfg.ConnConfig.RuntimeParams["application_name"] = "stale_pool"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	store := New(Config{})
	tb := &testBundle{ctx: ctx, store: store, pool: pool, db: PoolDB(pool)}
	tb.createQueue(t, "st")
	for _, s := range []string{"a", "b", "c"} {
		tb.push(t, "st", s, 0, 0, Time{Kind: TimeNow}, "{}")
	}
	b := NewBatcher(BatcherConfig{Pool: pool, Store: store})

	for round := range 3 {
		// Fill the pool with connections, then end them all from another
		// session: they stay in the pool, idle and dead.
		conns := make([]*pgxpool.Conn, 0, cfg.MaxConns)
		for range cfg.MaxConns {
			c, err := pool.Acquire(ctx)
			require.NoError(t, err)
			conns = append(conns, c)
		}
		for _, c := range conns {
			c.Release()
		}
		var killed int
		require.NoError(t, db.Pool(t).QueryRow(ctx, "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE application_name = 'stale_pool'").Scan(&killed))
		require.Equal(t, int(cfg.MaxConns), killed, "round %d: pooled connections ended", round)

		res, err := b.Invoke(ctx, "doc_pick(varchar,integer,integer,varchar)", []Value{{Text: "st"}, {Text: "0"}, {Text: "1"}, {Text: "5m"}})
		require.NoError(t, err, "round %d: pick after the pool's connections died", round)
		require.Len(t, res.Rows, 1)
		res, err = b.Invoke(ctx, "doc_complete(varchar,varchar)", []Value{{Text: "st"}, {Text: string(res.Rows[0][0])}})
		require.NoError(t, err, "round %d: complete", round)
		require.Equal(t, "1", string(res.Rows[0][0]))
	}
}
