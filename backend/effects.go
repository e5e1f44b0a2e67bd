package backend

import "strconv"

// Metric names Fetchq 4.0.2 counts (spec §1.9). Per-version counters are
// named "v" followed by the version, see [VersionMetric].
const (
	MetricCnt = "cnt" // documents in the table
	MetricPnd = "pnd" // pending (status 1)
	MetricPln = "pln" // planned (status 0)
	MetricAct = "act" // active (status 2)
	MetricCpl = "cpl" // completed (status 3)
	MetricKll = "kll" // killed (status -1)
	MetricEnt = "ent" // entered: pushed or appended
	MetricDrp = "drp" // dropped
	MetricPkd = "pkd" // picked
	MetricPrc = "prc" // processed: any explicit resolution
	MetricRes = "res" // rescheduled
	MetricRej = "rej" // rejected
	MetricErr = "err" // errors: rejects, orphans and dead marks
	MetricOrp = "orp" // orphans: orphan reschedules and dead marks
)

// EffectKind says what an [Effect] did to a queue's counters.
type EffectKind uint8

const (
	// EffectAdd adds Delta to the counter Metric of Queue: what the
	// extension logs as one metrics_writes increment row.
	EffectAdd EffectKind = iota

	// EffectReset means the operation replaced the counters of Queue in
	// fetchq.metrics itself (and deleted its fetchq.metrics_writes rows), as
	// metric_reset does: a caller holding not yet written deltas for Queue
	// must discard them. Metric and Delta are unused.
	EffectReset

	// EffectResetAll is EffectReset for every queue (fetchq.metrics and
	// fetchq.metrics_writes were emptied). Queue, Metric and Delta are unused.
	EffectResetAll
)

// Effect is one change an operation made to the Fetchq counters.
type Effect struct {
	Kind   EffectKind
	Queue  string // the queue name as stored (folded to lower case)
	Metric string
	Delta  int64
}

// Effects lists the counter changes of one successful operation, in the
// order the extension would have logged them (spec §2.8). Zero deltas are
// never listed. An operation that failed, or changed nothing, has none.
//
// The operations return Effects instead of writing them: the caller applies
// them after the transaction that made them commits (and drops them if it
// rolls back). The slice is allocated once per operation with its final
// capacity.
type Effects []Effect

// add appends an EffectAdd unless delta is 0.
func (e Effects) add(queue, metric string, delta int64) Effects {
	if delta == 0 {
		return e
	}
	return append(e, Effect{Kind: EffectAdd, Queue: queue, Metric: metric, Delta: delta})
}

// versionMetrics caches the names of the common small versions.
var versionMetrics = func() (m [16]string) {
	for i := range m {
		m[i] = "v" + strconv.Itoa(i)
	}
	return m
}()

// VersionMetric returns the name of the per-version counter of version v,
// "v<v>" (e.g. "v0", "v-1").
func VersionMetric(v int32) string {
	if v >= 0 && int(v) < len(versionMetrics) {
		return versionMetrics[v]
	}
	return "v" + strconv.FormatInt(int64(v), 10)
}

// statusMetric is the gauge of a status: pnd for 1, pln for 0.
func pendingMetric(status int) string {
	if status == 1 {
		return MetricPnd
	}
	return MetricPln
}

// insertEffects are the writes of a push, append or push-many that inserted
// n documents of one version with one status (ent, cnt, v<ver>, pnd|pln).
func insertEffects(queue string, version int32, status int, n int64) Effects {
	if n == 0 {
		return nil
	}
	e := make(Effects, 0, 4)
	e = e.add(queue, MetricEnt, n)
	e = e.add(queue, MetricCnt, n)
	e = e.add(queue, VersionMetric(version), n)
	return e.add(queue, pendingMetric(status), n)
}
