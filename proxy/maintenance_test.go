package proxy_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// TestListenPendingThroughProxy: a client LISTENing through the proxy on
// fetchq__<q>__pnd is notified when a planned document becomes pending,
// with nobody calling maintenance.
func TestListenPendingThroughProxy(t *testing.T) {
	t.Parallel()
	b, _ := setupMaintained(t)
	conn := fetchqConn(t, b, "lq")
	ctx := ctxT(t, time.Minute)
	_, err := conn.Exec(ctx, "SELECT * FROM fetchq.queue_enable_notify('lq')")
	require.NoError(t, err)

	cfg, err := pgconn.ParseConfig(b.proxyDSN("", ""))
	require.NoError(t, err)
	notes := make(chan *pgconn.Notification, 16)
	cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) { notes <- n }
	listener, err := pgconn.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	defer listener.Close(context.Background())
	_, err = listener.Exec(ctx, `LISTEN "fetchq__lq__pnd"`).ReadAll()
	require.NoError(t, err)

	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT * FROM fetchq.doc_push('lq', 'later', 0, 0, NOW() + INTERVAL '1 second', '{}')").Scan(&n))
	require.Equal(t, 1, n)
	pushed := time.Now()

	// The client waits idle in LISTEN: the proxy must deliver the
	// notification on its own.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, listener.WaitForNotification(wctx))
	got := <-notes
	require.Equal(t, "fetchq__lq__pnd", got.Channel)
	require.Equal(t, "later", got.Payload)
	require.Less(t, time.Since(pushed), 3*time.Second)
}

// TestPlannedBecomesPickable: a document due in 1 s is pickable within 2 s
// through the proxy, with nobody calling maintenance.
func TestPlannedBecomesPickable(t *testing.T) {
	t.Parallel()
	b, _ := setupMaintained(t)
	conn := fetchqConn(t, b, "pl")
	ctx := ctxT(t, time.Minute)
	_, err := conn.Exec(ctx, "SELECT * FROM fetchq.doc_push('pl', 'soon', 0, 0, NOW() + INTERVAL '1 second', '{}')")
	require.NoError(t, err)
	pushed := time.Now()
	var subject string
	require.Eventually(t, func() bool {
		err := conn.QueryRow(ctx, "SELECT subject FROM fetchq.doc_pick('pl', 0, 1, '5m')").Scan(&subject)
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
	require.Equal(t, "soon", subject)
	require.Less(t, time.Since(pushed), 2*time.Second)
}

// TestRandomizedMetricsAgree: after a randomized mix of operations through
// the proxy, some inside transactions that roll back, the counters agree
// with the documents.
func TestRandomizedMetricsAgree(t *testing.T) {
	t.Parallel()
	b, _ := setupMaintained(t)
	conn := fetchqConn(t, b, "rnd")
	ctx := ctxT(t, 5*time.Minute)
	rng := rand.New(rand.NewPCG(1, 2))
	next := 0
	committed := map[string]int{}
	for i := 0; i < 2000; i++ {
		inTx := rng.IntN(5) == 0
		rollback := inTx && rng.IntN(2) == 0
		var tx pgx.Tx
		q := func(sql string, args ...any) int {
			var rows pgx.Rows
			var err error
			if tx != nil {
				rows, err = tx.Query(ctx, sql, args...)
			} else {
				rows, err = conn.Query(ctx, sql, args...)
			}
			require.NoError(t, err)
			n := 0
			for rows.Next() {
				n++
			}
			require.NoError(t, rows.Err())
			return n
		}
		if inTx {
			var err error
			tx, err = conn.Begin(ctx)
			require.NoError(t, err)
		}
		op := ""
		switch r := rng.IntN(10); {
		case r < 4:
			next++
			q("SELECT * FROM fetchq.doc_push('rnd', $1, 0, 0, NOW() - INTERVAL '1 second', '{}')", "d"+strconv.Itoa(next))
			op = "ent"
		default:
			var subject string
			var err error
			if tx != nil {
				err = tx.QueryRow(ctx, "SELECT subject FROM fetchq.doc_pick('rnd', 0, 1, '5m')").Scan(&subject)
			} else {
				err = conn.QueryRow(ctx, "SELECT subject FROM fetchq.doc_pick('rnd', 0, 1, '5m')").Scan(&subject)
			}
			if err == pgx.ErrNoRows {
				break
			}
			require.NoError(t, err)
			op = "pkd"
			if !rollback {
				committed["pkd"]++
			}
			switch rng.IntN(5) {
			case 0:
				q("SELECT * FROM fetchq.doc_complete('rnd', $1)", subject)
				op = "cpl"
			case 1:
				q("SELECT * FROM fetchq.doc_reject('rnd', $1, 'no', '{}')", subject)
				op = "rej"
			case 2:
				q("SELECT * FROM fetchq.doc_kill('rnd', $1)", subject)
				op = "kll"
			case 3:
				q("SELECT * FROM fetchq.doc_reschedule('rnd', $1, NOW() + INTERVAL '1 hour')", subject)
				op = "res"
			case 4:
				q("SELECT * FROM fetchq.doc_drop('rnd', $1)", subject)
				op = "drp"
			}
		}
		if tx != nil {
			if rollback {
				require.NoError(t, tx.Rollback(ctx))
			} else {
				require.NoError(t, tx.Commit(ctx))
			}
		}
		if op != "" && op != "pkd" && !rollback {
			committed[op]++
		}
	}

	counts := map[string]int64{}
	rows, err := conn.Query(ctx, "SELECT status, count(*) FROM fetchq_data.rnd__docs GROUP BY status")
	require.NoError(t, err)
	var total int64
	for rows.Next() {
		var st int
		var n int64
		require.NoError(t, rows.Scan(&st, &n))
		counts[map[int]string{-1: "kll", 0: "pln", 1: "pnd", 2: "act", 3: "cpl"}[st]] = n
		total += n
	}
	require.NoError(t, rows.Err())
	counts["cnt"] = total

	var c struct{ cnt, pnd, pln, act, cpl, kll, ent, drp, pkd, prc, res, rej, orp, err *int64 }
	require.NoError(t, conn.QueryRow(ctx, "SELECT * FROM fetchq.metric_get_common('rnd')").Scan(
		&c.cnt, &c.pnd, &c.pln, &c.act, &c.cpl, &c.kll, &c.ent, &c.drp, &c.pkd, &c.prc, &c.res, &c.rej, &c.orp, &c.err))
	v := func(p *int64) int64 {
		if p == nil {
			return 0
		}
		return *p
	}
	for name, got := range map[string]*int64{"cnt": c.cnt, "pnd": c.pnd, "pln": c.pln, "act": c.act, "cpl": c.cpl, "kll": c.kll} {
		require.Equal(t, counts[name], v(got), "gauge %s", name)
	}
	for name, got := range map[string]*int64{"ent": c.ent, "pkd": c.pkd, "drp": c.drp, "res": c.res, "rej": c.rej} {
		require.Equal(t, int64(committed[name]), v(got), "counter %s", name)
	}
	var cmp [6]int64
	require.NoError(t, conn.QueryRow(ctx, "SELECT * FROM fetchq.metric_compute('rnd')").Scan(&cmp[0], &cmp[1], &cmp[2], &cmp[3], &cmp[4], &cmp[5]))
	require.Equal(t, [6]int64{counts["cnt"], counts["pln"], counts["pnd"], counts["act"], counts["kll"], counts["cpl"]}, cmp)
	for _, m := range []string{"cnt", "pnd", "act"} {
		var got int64
		require.NoError(t, conn.QueryRow(ctx, "SELECT current_value FROM fetchq.metric_get('rnd', $1)", m).Scan(&got))
		require.Equal(t, counts[m], got, fmt.Sprintf("metric_get %s", m))
	}
}
