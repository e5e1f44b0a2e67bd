package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// preloadSQL inserts $1 pending documents, due an hour ago, into the
// benchmark queue. The table layout is the same with the proxy and the
// extension.
const preloadSQL = `INSERT INTO fetchq_data.bench__docs
  (subject, version, priority, status, attempts, iterations, next_iteration, created_at, payload)
SELECT 'd' || g, 0, 0, 1, 0, 0, now() - interval '1 hour', now() - interval '1 hour', '{}'::jsonb
  FROM generate_series(1, %d) g`

// buildTemplates creates the template databases the selected workloads
// clone.
func (b *bench) buildTemplates(ctx context.Context) error {
	queue := b.o.has("W1") || b.o.has("W2") || b.o.has("W3")
	docs := b.o.has("W2") || b.o.has("W3")
	if queue {
		b.logf("template %s: fetchq.init() and queue_create through the proxy", tmplFetchq)
		if err := b.fetchqTemplate(ctx); err != nil {
			return fmt.Errorf("template %s: %w", tmplFetchq, err)
		}
		if docs {
			if err := b.docsTemplate(ctx, tmplFetchq, tmplFetchqDocs); err != nil {
				return err
			}
		}
	}
	if queue && b.o.extensionSQL != "" {
		b.logf("template %s: loading %s", tmplExt, b.o.extensionSQL)
		if err := b.extTemplate(ctx); err != nil {
			return fmt.Errorf("template %s: %w", tmplExt, err)
		}
		if docs {
			if err := b.docsTemplate(ctx, tmplExt, tmplExtDocs); err != nil {
				return err
			}
		}
	}
	if b.o.has("W3") {
		b.logf("template %s: River migrations and %d jobs", tmplRiver, b.o.docs)
		if err := b.createDB(ctx, tmplRiver, ""); err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, b.riverBin, "setup", "-dsn", dsn(b.pgPort, tmplRiver), "-jobs", strconv.Itoa(b.o.docs))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("template %s: river-bench setup: %w\n%s", tmplRiver, err, out)
		}
	}
	if b.o.has("W4") {
		b.logf("template %s: pgbench -i -s %d", tmplPgbench, b.o.scale)
		if err := b.createDB(ctx, tmplPgbench, ""); err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, "pgbench", "-i", "-q", "-s", strconv.Itoa(b.o.scale),
			"-h", "127.0.0.1", "-p", strconv.Itoa(b.pgPort), "-U", "postgres", tmplPgbench)
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("template %s: pgbench -i: %w\n%s", tmplPgbench, err, out)
		}
	}
	return nil
}

// fetchqTemplate creates the proxy's schema and the queue the way a Fetchq
// client does: fetchq.init() and fetchq.queue_create() through the proxy.
func (b *bench) fetchqTemplate(ctx context.Context) error {
	if err := b.createDB(ctx, tmplFetchq, ""); err != nil {
		return err
	}
	proxy, port, err := b.startProxy(ctx, tmplFetchq, "template")
	if err != nil {
		return err
	}
	defer proxy.stop()
	conn, err := connectPort(ctx, port, tmplFetchq)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT * FROM fetchq.init()"); err != nil {
		return fmt.Errorf("fetchq.init(): %w", err)
	}
	var created bool
	var id int32
	if err := conn.QueryRow(ctx, "SELECT * FROM fetchq.queue_create('"+queueName+"')").Scan(&created, &id); err != nil {
		return fmt.Errorf("fetchq.queue_create: %w", err)
	}
	if !created {
		return fmt.Errorf("fetchq.queue_create('%s') created nothing", queueName)
	}
	return nil
}

// extTemplate loads the user's extension SQL into a fresh database, then
// runs fetchq.init() and creates the queue directly on Postgres.
func (b *bench) extTemplate(ctx context.Context) error {
	if err := b.createDB(ctx, tmplExt, ""); err != nil {
		return err
	}
	// 4.0.2 generates its uuids with uuid-ossp; a script that creates it
	// itself does no harm.
	if err := b.exec(ctx, tmplExt, `CREATE EXTENSION IF NOT EXISTS "uuid-ossp"`); err != nil {
		b.logf("note: %v", err)
	}
	src, err := os.ReadFile(b.o.extensionSQL)
	if err != nil {
		return err
	}
	// An extension script starts with `\echo Use "CREATE EXTENSION ..." \quit`
	// to stop psql from running it; drop psql meta-commands.
	var kept []string
	for l := range strings.SplitSeq(string(src), "\n") {
		if t := strings.TrimSpace(l); strings.HasPrefix(t, `\echo`) || strings.HasPrefix(t, `\quit`) {
			continue
		}
		kept = append(kept, l)
	}
	script := filepath.Join(b.dir, "extension.sql") // removed with the directory
	if err := os.WriteFile(script, []byte(strings.Join(kept, "\n")), 0o600); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn(b.pgPort, tmplExt), "-f", script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("psql -f %s: %w\n%s", b.o.extensionSQL, err, tailLines(string(out), 10))
	}
	return b.exec(ctx, tmplExt,
		"SELECT * FROM fetchq.init()",
		"SELECT * FROM fetchq.queue_create('"+queueName+"')",
		"SELECT 1 FROM fetchq_data."+queueName+"__docs LIMIT 0")
}

// docsTemplate clones base and preloads -docs pending documents.
func (b *bench) docsTemplate(ctx context.Context, base, name string) error {
	b.logf("template %s: %d pending documents", name, b.o.docs)
	if err := b.createDB(ctx, name, base); err != nil {
		return err
	}
	return b.exec(ctx, name, fmt.Sprintf(preloadSQL, b.o.docs), "VACUUM ANALYZE fetchq_data."+queueName+"__docs")
}

// statusCounts counts documents by status (1 pending, 2 active, 3
// completed, ...).
type statusCounts map[int]int64

// total is the number of documents.
func (c statusCounts) total() int64 {
	var n int64
	for _, v := range c {
		n += v
	}
	return n
}

// docCounts counts the benchmark queue's documents by status, directly on
// Postgres.
func (b *bench) docCounts(ctx context.Context, db string) (statusCounts, error) {
	conn, err := b.connect(ctx, db)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT status, count(*) FROM fetchq_data."+queueName+"__docs GROUP BY status")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := statusCounts{}
	for rows.Next() {
		var st int
		var n int64
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[st] = n
	}
	return out, rows.Err()
}
