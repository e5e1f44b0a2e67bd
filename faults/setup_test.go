package faults

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// initFetchq creates the Fetchq tables and queue through a proxy, as a
// client would, and returns once the queue exists.
func initFetchq(t *testing.T, dsn, queue string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer closeConn(conn)
	_, err = conn.Exec(ctx, "SELECT * FROM fetchq.init()")
	require.NoError(t, err)
	var id int
	var created bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT was_created, queue_id FROM fetchq.queue_create($1)", queue).Scan(&created, &id))
	require.True(t, created, "queue %s created", queue)
}
