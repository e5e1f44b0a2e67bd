package backend

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
)

// Metrics holds the counter changes of committed operations that are not
// yet in fetchq.metrics: one 64-bit delta per (queue, metric). It replaces
// the extension's fetchq.metrics_writes rows (three to five per operation)
// with memory: the proxy calls [Metrics.Apply] with an operation's
// [Effects] once the transaction that made them has committed, and
// [Metrics.Flush] adds all deltas to fetchq.metrics in one statement,
// typically every second (see [MaintainerConfig.FlushInterval]) and on a
// clean shutdown.
//
// Durability: deltas live in this process until flushed. A clean stop
// ([Maintainer.Stop]) flushes them; a crash loses the deltas applied since
// the last successful flush, i.e. at most one flush interval of event
// counters (ent, pkd, prc, ...). The status gauges (cnt, pnd, pln, act,
// cpl, kll) can then be repaired with metric_reset, and metric_compute
// always counts the documents themselves.
//
// Reads through a [Store] that uses this Metrics (metric_get,
// metric_get_common, metric_get_all, metric_get_total, metric_snap) are
// exact for the work committed through this process: they flush first when
// they run in autocommit, and add the pending deltas to what they read
// otherwise. Work of other processes is visible once they flushed.
//
// A Metrics is safe for concurrent use. The zero value is not usable; call
// [NewMetrics].
type Metrics struct {
	// flushMu is held while deltas are on their way to the database (so
	// that no delta is ever both pending and in flight unseen) and while a
	// Store reads counters with the pending deltas added.
	flushMu sync.Mutex

	mu      sync.Mutex
	pending map[metricKey]*delta
}

// metricKey identifies one counter.
type metricKey struct {
	queue, metric string
}

// delta is the pending change of one counter.
type delta struct {
	// value is the sum of the applied deltas. A counter whose deltas sum
	// to 0 stays pending: the flush creates its row, as the extension's
	// pack does for a +1 and a -1.
	value int64
	// writes counts the applied effects: each is one metrics_writes row
	// the extension would have logged.
	writes int64
}

// NewMetrics returns an empty Metrics.
func NewMetrics() *Metrics {
	return &Metrics{pending: make(map[metricKey]*delta)}
}

// Apply records the effects of one committed operation. EffectAdd adds to
// the counter's pending delta; EffectReset discards the pending deltas of
// its queue and EffectResetAll all of them, because the operation replaced
// the counters in fetchq.metrics (the deltas are already part of what it
// counted, or belong to counters it deleted). A reset waits for a flush in
// progress, so that no delta reaches the database after the reset it
// predates.
//
// Call it only after the transaction that produced e has committed; drop
// the effects of a transaction that rolled back.
func (m *Metrics) Apply(e Effects) {
	if len(e) == 0 {
		return
	}
	resets := false
	for _, x := range e {
		if x.Kind != EffectAdd {
			resets = true
			break
		}
	}
	if resets {
		m.flushMu.Lock()
		defer m.flushMu.Unlock()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, x := range e {
		switch x.Kind {
		case EffectAdd:
			k := metricKey{x.Queue, x.Metric}
			d := m.pending[k]
			if d == nil {
				d = &delta{}
				m.pending[k] = d
			}
			d.value += x.Delta
			d.writes++
		case EffectReset:
			for k := range m.pending {
				if k.queue == x.Queue {
					delete(m.pending, k)
				}
			}
		case EffectResetAll:
			clear(m.pending)
		}
	}
}

// Pending returns the pending delta of a counter and whether there is one.
func (m *Metrics) Pending(queue, metric string) (int64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.pending[metricKey{queue, metric}]
	if !ok {
		return 0, false
	}
	return d.value, true
}

// Flush adds every pending delta to its fetchq.metrics row (creating
// missing rows) in one statement on db, and forgets the deltas once the
// statement succeeded. On failure the deltas stay pending, merged with any
// applied meanwhile, for the next flush. db should autocommit (the service
// pool): deltas flushed inside a transaction that later rolls back are
// lost.
//
// The statement is an INSERT ... ON CONFLICT (queue, metric) DO UPDATE,
// rows in key order (concurrent flushes of several proxies cannot
// deadlock); it needs the unique index on fetchq.metrics(queue, metric)
// that init() creates, and creates it itself when it is missing.
//
// If the statement's outcome is unknown (the connection broke after it was
// sent), the deltas are kept and may be counted twice.
func (m *Metrics) Flush(ctx context.Context, db DB) error {
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	_, err := m.flushLocked(ctx, db)
	return err
}

// flushLocked is Flush with flushMu held. It returns the number of effects
// (metrics_writes row equivalents) it flushed.
func (m *Metrics) flushLocked(ctx context.Context, db DB) (int64, error) {
	m.mu.Lock()
	batch := m.pending
	if len(batch) == 0 {
		m.mu.Unlock()
		return 0, nil
	}
	m.pending = make(map[metricKey]*delta, len(batch))
	m.mu.Unlock()

	writes, err := flushDeltas(ctx, db, batch)
	if err != nil {
		m.mu.Lock()
		for k, d := range m.pending {
			if b := batch[k]; b != nil {
				b.value += d.value
				b.writes += d.writes
			} else {
				batch[k] = d
			}
		}
		m.pending = batch
		m.mu.Unlock()
		return 0, err
	}
	return writes, nil
}

// pendingRow is one pending delta as the SQL statements receive it.
type pendingRow struct {
	Queue  string `json:"q"`
	Metric string `json:"m"`
	Value  int64  `json:"v"`
}

// encodePending renders deltas as a JSON array for jsonb_to_recordset, in
// key order.
func encodePending(batch map[metricKey]*delta) string {
	out := make([]pendingRow, 0, len(batch))
	for k, d := range batch {
		out = append(out, pendingRow{k.queue, k.metric, d.value})
	}
	slices.SortFunc(out, func(a, b pendingRow) int {
		return cmp.Or(cmp.Compare(a.Queue, b.Queue), cmp.Compare(a.Metric, b.Metric))
	})
	b, err := json.Marshal(out)
	if err != nil {
		panic(fmt.Sprintf("backend: encoding metric deltas: %v", err)) // strings and ints always encode
	}
	return string(b)
}

// snapshot returns a copy of the pending deltas that keep reports true,
// with tx applied on top: the effects of the reader's own transaction,
// not committed yet (see [WithTxEffects]).
func (m *Metrics) snapshot(keep func(metricKey) bool, tx Effects) map[metricKey]*delta {
	m.mu.Lock()
	out := make(map[metricKey]*delta)
	for k, d := range m.pending {
		if keep(k) {
			out[k] = &delta{value: d.value, writes: d.writes}
		}
	}
	m.mu.Unlock()
	for _, x := range tx {
		switch x.Kind {
		case EffectAdd:
			k := metricKey{x.Queue, x.Metric}
			if !keep(k) {
				continue
			}
			d := out[k]
			if d == nil {
				d = &delta{}
				out[k] = d
			}
			d.value += x.Delta
			d.writes++
		case EffectReset:
			for k := range out {
				if k.queue == x.Queue {
					delete(out, k)
				}
			}
		case EffectResetAll:
			clear(out)
		}
	}
	return out
}

type txEffectsKey struct{}

// WithTxEffects returns a copy of ctx that carries e, the counter effects
// of the caller's open transaction, held until it commits (see
// [Metrics.Apply]): counter reads inside that transaction add them, as
// 4.0.2's reads see the transaction's own metric writes.
func WithTxEffects(ctx context.Context, e Effects) context.Context {
	return context.WithValue(ctx, txEffectsKey{}, e)
}

// txEffects returns the effects WithTxEffects put in ctx.
func txEffects(ctx context.Context) Effects {
	e, _ := ctx.Value(txEffectsKey{}).(Effects)
	return e
}

// flushSQL adds the deltas $1 to fetchq.metrics. The ORDER BY makes
// concurrent flushes lock rows in the same order.
const flushSQL = `INSERT INTO fetchq.metrics AS m (queue, metric, value, updated_at)
SELECT x.q, x.m, x.v, now() FROM jsonb_to_recordset($1::jsonb) AS x(q text, m text, v bigint) ORDER BY x.q, x.m
ON CONFLICT (queue, metric) DO UPDATE SET value = m.value + EXCLUDED.value, updated_at = now()`

// flushLockTimeout bounds how long a flush waits for a counter row that
// a transaction holds (a client's metric_reset, say). The flush holds
// flushMu meanwhile, which that transaction's next counter read needs: a
// wait Postgres cannot see. Past it, the flush fails and its deltas stay
// pending for the next one.
const flushLockTimeout = "1s"

// flushDeltas runs flushSQL for batch, in a transaction with
// flushLockTimeout, and returns its number of writes. When the unique
// index is missing (42P10: a database initialised by an older version),
// it creates it and retries once.
func flushDeltas(ctx context.Context, db DB, batch map[metricKey]*delta) (int64, error) {
	data := encodePending(batch)
	flush := func() error {
		return db.Atomic(ctx, func(db DB) error {
			if _, err := exec(ctx, db, "SET LOCAL lock_timeout = '"+flushLockTimeout+"'", nil); err != nil {
				return err
			}
			_, err := exec(ctx, db, flushSQL, args{data})
			return err
		})
	}
	err := flush()
	if pgCode(err) == codeInvalidColumnRef {
		if err = ensureMetricsKey(ctx, db); err == nil {
			err = flush()
		}
	}
	if err != nil {
		return 0, fmt.Errorf("backend: flushing %d metric deltas: %w", len(batch), err)
	}
	var writes int64
	for _, d := range batch {
		writes += d.writes
	}
	return writes, nil
}

// ensureMetricsKey runs the migration that gives fetchq.metrics its unique
// (queue, metric) key (sql/metrics_key.sql), in one transaction under the
// init lock.
func ensureMetricsKey(ctx context.Context, db DB) error {
	return db.Atomic(ctx, func(db DB) error {
		if err := advisoryLock(ctx, db, initLockKey); err != nil {
			return err
		}
		for _, stmt := range metricsKeyStatements {
			if _, err := exec(ctx, db, stmt, nil); err != nil {
				return err
			}
		}
		return nil
	})
}
