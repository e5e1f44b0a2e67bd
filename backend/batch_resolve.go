package backend

import (
	"context"
)

// Reschedules and rejects.
//
// The concurrent doc_reschedule (or doc_reject) calls of a queue become
// one statement over a JSON list, as completes do: a subject named by
// several calls of one batch is resolved by the first of them, the others
// get 0, as they would have, running after it. When the statement fails
// (an epoch or interval Postgres refuses, a ref_id too long for its
// column...), nothing was written, and every call of the batch runs alone,
// in arrival order, before the next batch starts: each gets exactly the
// answer or the error it would have got (execBatch, as for pushes).

type reschedReq struct {
	id      string
	args    []Value
	subject string
	payload *string // de-doubled JSON, nil for the three-argument form
	next    Time
	done    chan batchOutcome
}

type rejectReq struct {
	id      string
	args    []Value
	subject string
	message string
	details *string // de-doubled JSON; nil writes no log row
	refID   *string
	done    chan batchOutcome
}

// reschedItem is one element of the JSON list a reschedule batch sends.
// First is set for the first call of its subject, the one that may
// resolve it; the others are sent too, so that Postgres checks their
// next_iteration as it does alone.
type reschedItem struct {
	Subject string `json:"s"`
	Payload string `json:"p,omitempty"`
	Has     bool   `json:"h"`
	First   bool   `json:"f"`
	Kind    string `json:"k"`
	Text    string `json:"t,omitempty"`
}

// rejectItem is one element of the JSON list a reject batch sends; Log is
// false when the call writes no log row.
type rejectItem struct {
	Subject string  `json:"s"`
	Message string  `json:"m"`
	Details string  `json:"d,omitempty"`
	RefID   *string `json:"r"`
	Log     bool    `json:"l"`
}

func (b *Batcher) prepareReschedule(id string, o *overload, conv []arg, args []Value) (*Call, error) {
	q, ok := parseQueue(conv[0].str)
	t := conv[2].time
	if conv[0].null || conv[1].null || !ok || (len(conv) == 4 && conv[3].null) ||
		!(t.Kind == TimeEpoch || (t.Kind == TimeNow && plainInterval(t.Interval))) {
		return nil, nil
	}
	req := &reschedReq{id: id, args: args, subject: conv[1].str, next: t, done: make(chan batchOutcome, 1)}
	if len(conv) == 4 {
		payload, err := jsonArg(conv[3].str)
		if err != nil {
			return nil, err
		}
		req.payload = &payload
	}
	c := newResolveCall(b, b.resched, q.name, req, req.done, func(batch []*reschedReq) { b.execReschedules(q.name, batch) }, o,
		func(status int32) Effects {
			return make(Effects, 0, 4).add(q.name, MetricPrc, 1).add(q.name, MetricRes, 1).
				add(q.name, MetricAct, -1).add(q.name, pendingMetric(int(status)), 1)
		})
	c.key = batchKey{reschedule: q.name}
	return c, nil
}

// execReschedules runs one batch of reschedules and deals the outcome.
func (b *Batcher) execReschedules(queueName string, batch []*reschedReq) {
	first := firstCalls(batch, func(r *reschedReq) string { return r.subject })
	items := make([]reschedItem, len(batch))
	for i, r := range batch {
		it := reschedItem{Subject: r.subject, First: first[r.subject] == i}
		if r.payload != nil {
			it.Payload, it.Has = *r.payload, true
		}
		it.Kind, it.Text = batchTime(r.next)
		items[i] = it
	}
	// Alone, a next_iteration Postgres refuses fails the call whether or
	// not its document is active: the second branch computes every item's
	// timestamp (v, used twice, is materialized), so such a value fails
	// the batch and every call then runs alone. It returns no row (ts is
	// never NULL).
	q := queue{name: queueName}
	sql := "WITH v AS (SELECT x.s, x.p, x.h, x.f, " + batchTimeSQL("x") + " AS ts" +
		" FROM jsonb_to_recordset($1::jsonb) AS x(s text, p text, h boolean, f boolean, k text, t text))," +
		" u AS (UPDATE " + q.docs() + " d SET status = CASE WHEN v.ts <= now() THEN 1 ELSE 0 END, next_iteration = v.ts," +
		" attempts = 0, iterations = d.iterations + 1, last_iteration = now()," +
		" payload = CASE WHEN v.h THEN v.p::jsonb ELSE d.payload END" +
		" FROM v WHERE v.f AND d.subject = v.s AND d.status = 2 RETURNING d.subject, d.status)" +
		" SELECT subject, status FROM u UNION ALL SELECT v.s, NULL FROM v WHERE v.ts IS NULL"
	execBatch(b, batch, items, first, sql, nil, func(r *reschedReq) (string, chan batchOutcome, string, []Value) {
		return r.subject, r.done, r.id, r.args
	})
}

func (b *Batcher) prepareReject(id string, o *overload, conv []arg, args []Value) (*Call, error) {
	q, ok := parseQueue(conv[0].str)
	if conv[0].null || conv[1].null || !ok {
		return nil, nil
	}
	// NULL message is logged as '' and NULL details write no log row (see
	// Store.DocReject).
	req := &rejectReq{id: id, args: args, subject: conv[1].str, message: conv[2].str, done: make(chan batchOutcome, 1)}
	if !conv[3].null && conv[3].str != "" {
		details, err := jsonArg(conv[3].str)
		if err != nil {
			return nil, err
		}
		req.details = &details
	}
	if len(conv) == 5 {
		req.refID = conv[4].strp()
	}
	c := newResolveCall(b, b.rejects, q.name, req, req.done, func(batch []*rejectReq) { b.execRejects(q.name, batch) }, o,
		func(status int32) Effects {
			e := make(Effects, 0, 5).add(q.name, MetricPrc, 1).add(q.name, MetricErr, 1).
				add(q.name, MetricRej, 1).add(q.name, MetricAct, -1)
			if status == -1 {
				return e.add(q.name, MetricKll, 1)
			}
			return e.add(q.name, MetricPnd, 1)
		})
	c.key = batchKey{reject: q.name}
	return c, nil
}

// execRejects runs one batch of rejects and deals the outcome. The log
// rows are inserted in the calls' order.
func (b *Batcher) execRejects(queueName string, batch []*rejectReq) {
	first, items := firstOfSubjects(batch, func(r *rejectReq) string { return r.subject }, func(r *rejectReq) rejectItem {
		it := rejectItem{Subject: r.subject, Message: r.message, RefID: r.refID}
		if r.details != nil && fitsVarchar(r.message, 255) {
			it.Details, it.Log = *r.details, true
		}
		return it
	})
	q := queue{name: queueName}
	sql := "WITH v AS (SELECT x.s, x.m, x.d, x.r, x.l, x.o FROM ROWS FROM (jsonb_to_recordset($2::jsonb)" +
		" AS (s text, m text, d text, r text, l boolean)) WITH ORDINALITY AS x(s, m, d, r, l, o))," +
		" u AS (UPDATE " + q.docs() + " d SET" +
		" status = CASE WHEN d.attempts >= COALESCE((SELECT r.max_attempts FROM fetchq.queues r WHERE r.name = $1::text ORDER BY r.id LIMIT 1), 5) THEN -1 ELSE 1 END," +
		" lock_upgrade = CASE WHEN d.lock_upgrade IS NULL THEN NULL ELSE now() END," +
		" iterations = d.iterations + 1, last_iteration = now()" +
		" FROM v WHERE d.subject = v.s AND d.status = 2 RETURNING d.subject, d.status)," +
		" l AS (INSERT INTO " + q.logs() + " (created_at, subject, message, details, ref_id)" +
		" SELECT now(), u.subject, v.m, v.d::jsonb, v.r FROM u JOIN v ON v.s = u.subject WHERE v.l ORDER BY v.o)" +
		" SELECT subject, status FROM u"
	execBatch(b, batch, items, first, sql, []any{queueName}, func(r *rejectReq) (string, chan batchOutcome, string, []Value) {
		return r.subject, r.done, r.id, r.args
	})
}

// newResolveCall returns the Call of req, a reschedule or reject of queue
// whose outcome arrives on done; exec runs a batch of them. The call's
// result is 1, with effects(status) of the document's new status, when it
// resolved its document, else 0; or what it got alone.
func newResolveCall[R any](b *Batcher, groups map[string]*group[R], queue string, req R, done chan batchOutcome,
	exec func(batch []R), o *overload, effects func(status int32) Effects) *Call {
	return newCall(b, groups, queue, req, done, func(g *group[R]) {
		runGroup(b, groups, queue, g, one[R], exec)
	}, func(_ context.Context, out batchOutcome) (*Result, error) {
		switch {
		case out.alone != nil || out.err != nil:
			return out.alone, out.err
		case !out.affected:
			return &Result{Columns: o.columns, Rows: [][][]byte{{i32Text(0)}}}, nil
		}
		return &Result{Columns: o.columns, Rows: [][][]byte{{i32Text(1)}}, Effects: effects(out.status)}, nil
	})
}
