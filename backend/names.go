package backend

import (
	"strconv"

	"github.com/jackc/pgx/v5"
)

// MaxQueueNameLength is the longest queue name (fetchq.queues.name is
// varchar(40)).
const MaxQueueNameLength = 40

// NormalizeQueueName folds name to lower case (ASCII letters only, as
// Postgres folds unquoted identifiers) and reports whether the result is a
// valid queue name: 1 to 40 characters, lower-case letters, digits and
// underscores, not starting with a digit (^[a-z_][a-z0-9_]{0,39}$).
//
// Fetchq 4.0.2 builds table names with unquoted %s, so Postgres folds them,
// while the registry, jobs and metrics keep the name as given and doc_pick
// quotes it; mixed-case queues are therefore half broken there (spec §6.3).
// This package uses the folded name everywhere, so `Bar` and `bar` are the
// same queue.
func NormalizeQueueName(name string) (string, bool) {
	if len(name) == 0 || len(name) > MaxQueueNameLength {
		return foldASCII(name), false
	}
	name = foldASCII(name)
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return name, false
		}
	}
	return name, true
}

// foldASCII lower-cases ASCII letters only, allocating only when needed.
func foldASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// queue is a validated, folded queue name. Its methods return quoted SQL
// identifiers built from it.
type queue struct {
	name string
}

// parseQueue validates and folds a queue name argument.
func parseQueue(name string) (queue, bool) {
	n, ok := NormalizeQueueName(name)
	return queue{name: n}, ok
}

const (
	// apiSchema holds the extension's functions and catalog tables.
	apiSchema = "fetchq"
	// dataSchema holds the per-queue tables.
	dataSchema = "fetchq_data"
)

// maxSubjectLen is the length of the docs tables' subject column,
// varchar(50).
const maxSubjectLen = 50

// docs, logs and metrics are the qualified, quoted per-queue table names.
func (q queue) docs() string    { return pgx.Identifier{dataSchema, q.name + "__docs"}.Sanitize() }
func (q queue) logs() string    { return pgx.Identifier{dataSchema, q.name + "__logs"}.Sanitize() }
func (q queue) metrics() string { return pgx.Identifier{dataSchema, q.name + "__metrics"}.Sanitize() }

// Index name suffixes (spec §1.6): fetchq_<q>_for_<suffix>_idx.
const (
	indexPnd = "pnd"
	indexOrp = "orp"
	indexDod = "dod"
	indexUps = "ups"
)

// indexName is the unquoted name of one of the queue's indexes;
// pickIndexName that of the pick index of a version.
func (q queue) indexName(suffix string) string { return "fetchq_" + q.name + "_for_" + suffix + "_idx" }
func (q queue) pickIndexName(version int32) string {
	return q.indexName("pick_" + strconv.FormatInt(int64(version), 10))
}

// qualifiedIndex quotes an index name with the fetchq_data schema.
func qualifiedIndex(name string) string { return pgx.Identifier{dataSchema, name}.Sanitize() }

// triggerName is the quoted name of the queue's notify trigger for event
// ("insert" or "update").
func (q queue) triggerName(event string) string {
	return pgx.Identifier{"fetchq__" + q.name + "__trg_notify_" + event}.Sanitize()
}

// args collects the bind parameters of one statement.
type args []any

// add appends v and returns its placeholder, "$n".
func (a *args) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// nullable returns nil for a nil pointer, else the pointed-to value.
func nullable[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
