package backend

import (
	"context"
)

// Lanes.
//
// The picks, completes and kills of a queue share one lane: one batch of
// them runs at a time per queue, its calls of each kind in one statement
// (the picks of each version and lock duration, the completes, the
// kills), all in one transaction: one round trip and one commit. A worker
// alternates a pick and a complete; with a batch sequence for each, two
// batches of a queue were always committing, and the flushes of their
// commits were most of their time (sampled under W2 with 32 clients: a
// pool backend waited on WALSync or the WALWrite lock in 318 samples for
// every 200 it ran). In a round the completes run first (they resolve
// documents their workers hold), then the picks; the calls of a round
// arrived while the previous one ran, so any order of them is one they
// could have run in alone.

// laneReq is a call of a lane: a pick (pick, of pkey) or a complete or
// kill (res, of rkey).
type laneReq struct {
	pick *pickReq
	pkey pickKey
	res  *resolveReq
	rkey resolveKey
}

// laneWeight bounds a round's picks by MaxPick (a complete or kill counts
// one).
func laneWeight(r laneReq) int {
	if r.pick != nil {
		return int(r.pick.limit)
	}
	return 1
}

// runLane runs the rounds of the lane of queue q.
func (b *Batcher) runLane(q string, g *group[laneReq]) {
	runGroup(b, b.lanes, q, g, laneWeight, b.execLane)
}

// execLane runs one round of a lane and deals its outcome.
func (b *Batcher) execLane(batch []laneReq) {
	var picks []pickKey
	var resolves []resolveKey
	pickCalls := map[pickKey][]*pickReq{}
	resolveCalls := map[resolveKey][]*resolveReq{}
	for _, r := range batch {
		if r.pick != nil {
			if pickCalls[r.pkey] == nil {
				picks = append(picks, r.pkey)
			}
			pickCalls[r.pkey] = append(pickCalls[r.pkey], r.pick)
			continue
		}
		if resolveCalls[r.rkey] == nil {
			resolves = append(resolves, r.rkey)
		}
		resolveCalls[r.rkey] = append(resolveCalls[r.rkey], r.res)
	}
	separately := func() {
		for _, k := range resolves {
			b.execResolves(k, resolveCalls[k])
		}
		for _, k := range picks {
			b.execPicks(k, pickCalls[k])
		}
	}
	mq, ok := b.db.(multiQuerier)
	if !ok || len(picks)+len(resolves) == 1 {
		separately()
		return
	}

	stmts := make([]batchStmt, 0, len(picks)+len(resolves))
	firsts := make([]map[string]int, len(resolves))
	statuses := make([]statusRows, len(resolves))
	for i, k := range resolves {
		first, items, sql := resolveBatch(k, resolveCalls[k])
		st, status, err := batchStatement(items, sql, nil)
		if err != nil {
			separately()
			return
		}
		firsts[i], statuses[i] = first, status
		stmts = append(stmts, st)
	}
	rows := make([][][][]byte, len(picks))
	for i, k := range picks {
		p := pickParams(k, pickCalls[k])
		stmts = append(stmts, batchStmt{
			sql:  pickBatchSQL(queue{name: k.queue}, k.version, b.cfg.MaxPick),
			args: []any{*p.Limit, nullable(p.Duration)},
			scan: func(row [][]byte) error {
				rows[i] = append(rows[i], copyRow(row))
				return nil
			},
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	err := mq.queryAll(ctx, stmts)
	cancel()
	if err != nil && rerunAlone(err) {
		// Postgres refused the round and wrote nothing: each statement
		// runs on its own, with its own answer to a failure.
		separately()
		return
	}
	for i, k := range resolves {
		dealBatch(b, resolveCalls[k], firsts[i], statuses[i], err, resolveCall)
	}
	for i, k := range picks {
		dealPicks(pickCalls[k], rows[i], err)
	}
}
