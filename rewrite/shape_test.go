package rewrite

import (
	"context"
	"strconv"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v5"
	"github.com/stretchr/testify/require"
)

// sibling returns sql with every maskable literal replaced by another value
// of its kind (variant picks which), so that it has the same shape key.
func sibling(sql string, variant int) (string, bool) {
	_, lits, ok := scanShape(sql)
	if !ok {
		return "", false
	}
	strs := []string{"", "x", "it''s", "ünï ''quoted''", `{"a":[1,2,{"b":"c"}]}`, "5 minutes", `\n`, "'' OR 1=1 --"}
	var b strings.Builder
	last := 0
	for i, l := range lits {
		b.WriteString(sql[last:l.start])
		if l.integer {
			b.WriteString(strconv.Itoa((variant*7 + i*13) % 100000))
		} else {
			b.WriteString("'" + strs[(variant+i)%len(strs)] + "'")
		}
		last = l.end
	}
	b.WriteString(sql[last:])
	return b.String(), true
}

// checkShape is the shape cache's property: after a sibling text of the
// same shape has primed the cache, a text gets exactly the plan and error
// a full parse gives it.
func checkShape(t *testing.T, sql string) {
	t.Helper()
	ctx := context.Background()
	want, wantErr := New(0).Rewrite(ctx, sql)
	for v := range 3 {
		sib, ok := sibling(sql, v)
		if !ok {
			return
		}
		r := New(8)
		_, _ = r.Rewrite(ctx, sib)
		got, err := r.Rewrite(ctx, sql)
		require.Equal(t, wantErr, err, "error of %q after %q", sql, sib)
		require.Equal(t, want, got, "plan of %q after %q", sql, sib)
	}
}

func TestShapeCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := New(64)
	for i := range 50 {
		sql := "SELECT * FROM fetchq.doc_push( 'q1', 's" + strconv.Itoa(i) + "', 0, " + strconv.Itoa(i) + ", NOW(), '{\"n\":" + strconv.Itoa(i) + ",\"q\":\"it''''s\"}' )"
		plan, err := r.Rewrite(ctx, sql)
		require.NoError(t, err)
		want, err := analyze(sql, nil)
		require.NoError(t, err)
		require.Equal(t, want, plan, sql)
	}
	require.EqualValues(t, 49, r.stats.hits.Load(), "one parse, then the shape serves every push")
	require.EqualValues(t, 1, r.stats.admitted.Load())
	require.Equal(t, 1, r.cache.len(), "shape hits do not fill the text cache")

	// Texts of one shape whose literals the analysis converts are refused
	// and parsed in full every time; results stay exact.
	for _, sql := range []string{
		"SELECT * FROM fetchq.doc_pick('q', '0', '1', '5m')",
		"SELECT * FROM fetchq.doc_pick('q', '1', '2', '5m')",
	} {
		checkShape(t, sql)
	}
}

// TestScanTokens: the wire-format decoding of pg_query's scan gives the
// tokens pg_query.Scan gives.
func TestScanTokens(t *testing.T) {
	t.Parallel()
	for _, sql := range append(goldenInputs(t), "SELECT * FROM fetchq.doc_push( 'q1', 's1', 0, 0, NOW(), '{\"a\":1}' ) -- c", "") {
		want, err := pg_query.Scan(sql)
		got, gerr := scanTokens(sql, nil)
		if err != nil {
			require.Error(t, gerr, sql)
			continue
		}
		require.NoError(t, gerr, sql)
		require.Len(t, got, len(want.Tokens), sql)
		for i, w := range want.Tokens {
			require.Equal(t, scanToken{start: w.Start, end: w.End, token: w.Token}, got[i], "%s: token %d", sql, i)
		}
	}
}

// TestShapeCacheMatchesParse runs the shape property over every golden
// input and a set of texts made to probe it.
func TestShapeCacheMatchesParse(t *testing.T) {
	t.Parallel()
	inputs := append(goldenInputs(t), corpusInputs(t)...)
	inputs = append(inputs,
		"SELECT * FROM fetchq.doc_pick('q', '0', '1', '5m')",         // strings to int params: converted
		"SELECT * FROM fetchq.doc_pick('q', 0, 1, '5m'::varchar(1))", // typmod: not bare
		"SELECT * FROM fetchq.doc_pick('q', 0, 1, '5m'); SELECT 1",   // two statements
		"SELECT * FROM fetchq.doc_pick('q', 0, 1, '5m') AS p(a, b)",
		"SELECT fetchq.doc_complete('q', 's')",
		"SELECT * FROM fetchq.doc_complete('q', 's', '{}')",
		"SELECT * FROM fetchq.doc_push('q', 's', 0, 0, '2030-01-01 00:00', '{}')",
		"SELECT * FROM fetchq.doc_push('q', 's', 0, 0, NOW() + INTERVAL '1 hour', '{}')",
		"SELECT * FROM fetchq.doc_push('q', 's', 0, 0, to_timestamp(0 / 1000.0), '{}')",
		"SELECT * FROM fetchq.doc_push('q', 's', 2147483647, 0, NOW(), 'null')",
		"SELECT * FROM fetchq.doc_push('q', 's', 007, 0, NOW(), '{}')",
		"SELECT * FROM fetchq.doc_pick('q', 0, 2147483648, '5m')",
		"SELECT * FROM fetchq.doc_pick('q', 0, -1, '5m')",
		"SELECT * FROM fetchq.doc_pick('q', 0, 1, 'x' 'y')",
		"SELECT * FROM fetchq.doc_pick('q', 0, 1, 'x'\n'y')",
		"SELECT * FROM fetchq.doc_pick(E'q\\'', 0, 1, '5m')",
		"SELECT * FROM fetchq.doc_pick($$q$$, 0, 1, '5m')",
		"SELECT * FROM fetchq.doc_pick('q', 0, 1, $1)",
		"SELECT * FROM fetchq.doc_pick('q', 0, 1)",
		"SELECT * FROM fetchq.doc_pick('q', 0, '1', 1)",
		"SELECT * FROM fetchq.queue_set_max_attempts('q', 5)",
		"SELECT * FROM fetchq.metric_get('q', 'cnt')",
		"SELECT * FROM fetchq.doc_reject( 'q1', 's1', 'worker exception', '{\"message\":\"x\"}' , '*' )",
		"SELECT * FROM fetchq.log_error('q', 's', 'm', '{}', 'null')",
		"SELECT * FROM fetchq.doc_push( 'q1', 1, NOW() - INTERVAL '1ms', '( ''a1'', 0, ''{\"a\":1}'', {DATA})')",
		"SELECT x FROM fetchq.queues WHERE name IN ('a', 'b')",
		"SELECT * FROM fetchq.doc_pick('q', 0, 1, '5m') /* c */",
		"  SELECT * FROM fetchq.doc_pick('q', 0, 1, '5m') ;  ",
	)
	for _, sql := range inputs {
		checkShape(t, sql)
	}
}

func BenchmarkRewriteShapeHit(b *testing.B) { benchmarkRewriteHits(b, false) }

// benchmarkRewriteHits rewrites texts of one admitted shape, differing in
// a literal: found by a literal template, or (templates false) by a scan.
// Shape hits do not enter the text cache, so every call takes the shape
// path: no parse.
func benchmarkRewriteHits(b *testing.B, templates bool) {
	ctx := context.Background()
	r := New(1024)
	texts := make([]string, 1024)
	for i := range texts {
		texts[i] = "SELECT * FROM fetchq.doc_push( 'q1', 'subject-" + strconv.Itoa(i) + "', 0, 0, NOW(), '{}' )"
	}
	r.templates.off = !templates
	if _, err := r.Rewrite(ctx, texts[0]); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := r.Rewrite(ctx, texts[i%len(texts)]); err != nil {
			b.Fatal(err)
		}
	}
}
