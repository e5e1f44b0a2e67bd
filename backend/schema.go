package backend

import (
	"context"
	"embed"
	"strings"
)

//go:embed sql/*.sql
var sqlFiles embed.FS

// schemaStatements are the statements of sql/schema.sql followed by those
// of sql/metrics_key.sql (metricsKeyStatements); queueStatements those of
// sql/queue_tables.sql, with {{docs}}, {{logs}} and {{metrics}}
// placeholders.
var (
	metricsKeyStatements = mustSplit("sql/metrics_key.sql")
	schemaStatements     = append(mustSplit("sql/schema.sql"), metricsKeyStatements...)
	queueStatements      = mustSplit("sql/queue_tables.sql")
)

func mustSplit(name string) []string {
	b, err := sqlFiles.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return splitStatements(string(b))
}

// SchemaSQL returns the statements [Store.Init] runs, in order, e.g. to
// build a template database. Each is one SQL statement without the
// terminating semicolon.
func SchemaSQL() []string {
	return append([]string(nil), schemaStatements...)
}

// splitStatements splits SQL text into statements at top-level semicolons,
// skipping -- and /* */ comments and honouring '...', "..." and $tag$...$tag$
// quoting. Empty statements are dropped. It is meant for this package's own
// embedded files, not for arbitrary input.
func splitStatements(src string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == '-' && strings.HasPrefix(src[i:], "--"):
			j := strings.IndexByte(src[i:], '\n')
			if j < 0 {
				i = len(src)
			} else {
				i += j
			}
		case c == '/' && strings.HasPrefix(src[i:], "/*"):
			j := strings.Index(src[i+2:], "*/")
			if j < 0 {
				i = len(src)
			} else {
				i += j + 4
			}
		case c == '\'' || c == '"':
			j := i + 1
			for j < len(src) {
				if src[j] == c {
					if j+1 < len(src) && src[j+1] == c {
						j += 2
						continue
					}
					break
				}
				j++
			}
			end := min(j+1, len(src))
			cur.WriteString(src[i:end])
			i = end
		case c == '$':
			tag, ok := dollarTag(src[i:])
			if !ok {
				cur.WriteByte(c)
				i++
				continue
			}
			j := strings.Index(src[i+len(tag):], tag)
			end := len(src)
			if j >= 0 {
				end = i + len(tag) + j + len(tag)
			}
			cur.WriteString(src[i:end])
			i = end
		case c == ';':
			flush()
			i++
		default:
			cur.WriteByte(c)
			i++
		}
	}
	flush()
	return out
}

// dollarTag returns the opening tag ($$ or $name$) at the start of s.
func dollarTag(s string) (string, bool) {
	for j := 1; j < len(s); j++ {
		c := s[j]
		switch {
		case c == '$':
			return s[:j+1], true
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || (j > 1 && c >= '0' && c <= '9'):
		default:
			return "", false
		}
	}
	return "", false
}

// initLockKey is the advisory lock (with lockNamespace) that serialises
// Init and Destroy calls, so that concurrent proxies do not race on
// CREATE ... IF NOT EXISTS (which is not race-free in Postgres).
const initLockKey = "fetchq.init"

// InfoResult is the result of fetchq.info().
type InfoResult struct {
	// Version is Config.Version, "4.0.2" by default: what the Node client
	// compares with the version it expects.
	Version string
}

// Info is fetchq.info(). It does not touch the database.
func (s *Store) Info() InfoResult {
	return InfoResult{Version: s.version}
}

// InitResult is the result of fetchq.init().
type InitResult struct {
	// WasInitialized is true when this call created the Fetchq schema and
	// false when fetchq.queues already existed (or the call failed).
	WasInitialized bool
}

// Init is fetchq.init(): it creates the schemas fetchq and fetchq_data, the
// system tables with their indexes and the fetchq_on_change trigger, the
// trigger functions, and seeds the lgp job. Every statement is idempotent
// (IF NOT EXISTS), so Init also repairs a partly missing schema, and runs in
// one transaction under an advisory lock.
//
// Return value: like Fetchq 4.0.2, WasInitialized is true the first time
// (the call that created fetchq.queues) and false on every later call, even
// though later calls succeed and repair what is missing (4.0.2 returned false
// because its unconditional CREATE TRIGGER failed and rolled everything
// back). The spec allows returning true always; keeping 4.0.2's answer keeps
// the result comparable with the extension, and the Node client ignores it.
// Like 4.0.2, Init is a catch-all: a failure rolls back and returns false
// (logged at Warn).
func (s *Store) Init(ctx context.Context, db DB) (InitResult, error) {
	var created bool
	err := db.Atomic(ctx, func(db DB) error {
		if err := advisoryLock(ctx, db, initLockKey); err != nil {
			return err
		}
		row, err := queryRow(ctx, db, "SELECT to_regclass('fetchq.queues') IS NULL", nil)
		if err != nil {
			return err
		}
		created = textBool(row[0])
		for _, stmt := range schemaStatements {
			if _, err := exec(ctx, db, stmt, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if caught(err) {
			s.logger.WarnContext(ctx, "fetchq.init failed", "error", err)
			return InitResult{}, nil
		}
		return InitResult{}, err
	}
	return InitResult{WasInitialized: created}, nil
}

// DestroyResult is the result of fetchq.destroy_with_terrible_consequences().
type DestroyResult struct {
	// Effects is a single EffectResetAll.
	Effects Effects
}

// Destroy is fetchq.destroy_with_terrible_consequences(): DROP SCHEMA fetchq
// CASCADE and DROP SCHEMA fetchq_data CASCADE (IF EXISTS), in one
// transaction. Errors propagate. The SQL function returns NULL, as 4.0.2
// does (it never assigns its was_destroyed flag).
func (s *Store) Destroy(ctx context.Context, db DB) (DestroyResult, error) {
	err := db.Atomic(ctx, func(db DB) error {
		if err := advisoryLock(ctx, db, initLockKey); err != nil {
			return err
		}
		if _, err := exec(ctx, db, "DROP SCHEMA IF EXISTS fetchq CASCADE", nil); err != nil {
			return err
		}
		_, err := exec(ctx, db, "DROP SCHEMA IF EXISTS fetchq_data CASCADE", nil)
		return err
	})
	if err != nil {
		return DestroyResult{}, err
	}
	return DestroyResult{Effects: Effects{{Kind: EffectResetAll}}}, nil
}

// queueTableStatements returns the CREATE TABLE statements of q.
func queueTableStatements(q queue) []string {
	r := strings.NewReplacer("{{docs}}", q.docs(), "{{logs}}", q.logs(), "{{metrics}}", q.metrics())
	out := make([]string, len(queueStatements))
	for i, s := range queueStatements {
		out[i] = r.Replace(s)
	}
	return out
}

// lockNamespace is the first key of every advisory lock this package takes
// (pg_advisory_xact_lock(int, int)); the second is hashtext of a name.
const lockNamespace int32 = 0x46515058 // "FQPX"

// advisoryLock takes a transaction-level advisory lock on name. It must run
// inside Atomic; the lock is released when the transaction ends.
func advisoryLock(ctx context.Context, db DB, name string) error {
	_, err := exec(ctx, db, "SELECT pg_advisory_xact_lock($1::int, hashtext($2::text))", args{lockNamespace, name})
	return err
}
