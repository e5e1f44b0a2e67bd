package rewrite

import (
	"context"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// templateTexts are texts of a few shapes, each with a place (%s) for a
// literal: a string body (quoted by the caller) or digits.
var templateTexts = []struct {
	prefix, suffix string
	integer        bool
}{
	{"SELECT * FROM fetchq.doc_complete('q', '", "')", false},
	{"SELECT * FROM fetchq.doc_push( 'q1', '", "', 0, 0, NOW(), '{}' )", false},
	{"select * from FETCHQ.doc_push('q', 's', ", ", 0, now(), '{\"a\":1}');", true},
	{"SELECT * FROM fetchq.doc_pick('q', 0, ", " , '5m') -- c", true},
	{"SELECT * FROM fetchq.doc_complete('q', '", "'\n)", false},
}

// checkTemplate: once a text of a shape has primed the cache, sql (a text
// of that shape's template with another literal) gets exactly what a full
// parse gives it, through the template or not.
func checkTemplate(t *testing.T, primer, sql string) (viaTemplate bool) {
	t.Helper()
	ctx := context.Background()
	want, wantErr := New(0).Rewrite(ctx, sql)
	r := New(8)
	_, _ = r.Rewrite(ctx, primer)
	got, err := r.Rewrite(ctx, sql)
	require.Equal(t, wantErr, err, "error of %q after %q", sql, primer)
	require.Equal(t, want, got, "plan of %q after %q", sql, primer)
	return r.stats.templateHits.Load() > 0
}

// TestLiteralTemplates: texts whose literals are plain take the template
// (no scan); anything else in a literal's place takes the scan or the
// parse, and every text gets what a full parse gives it.
func TestLiteralTemplates(t *testing.T) {
	t.Parallel()
	plain := []string{"", "x", "it''s", "''", "a''''b", "ünï", `\`, `\''`, "--", "/*", "$$", "'' OR 1=1 --", "a\nb", "{\"k\": [1, 2]}", "5 minutes"}
	other := []string{"'", "a'b", "x' || 'y", "x'\n'y", "x' 'y", "x')--", "x'::text", "x', 'y", "x' AND false AND '"}
	ints := []string{"0", "7", "007", "2147483647", "1000000000"}
	otherInts := []string{"2147483648", "99999999999", "-1", "1.5", "1e3", "0x10", "1_000", "(1)", "1 + 1"}
	for _, tt := range templateTexts {
		// A string place is the body between the quotes the prefix and
		// suffix hold.
		primer, yes, no := tt.prefix+"primer"+tt.suffix, plain, other
		if tt.integer {
			primer, yes, no = tt.prefix+"42"+tt.suffix, ints, otherInts
		}
		for _, v := range yes {
			require.True(t, checkTemplate(t, primer, tt.prefix+v+tt.suffix), "%q should take the template", v)
		}
		for _, v := range no {
			require.False(t, checkTemplate(t, primer, tt.prefix+v+tt.suffix), "%q should not take the template", v)
		}
	}
}

// TestTemplatesBounded: at most maxTemplates templates are kept, the most
// recent ones, and a shape dropped from the list can come back.
func TestTemplatesBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := New(64)
	text := func(shape, v int) string {
		return "SELECT * FROM fetchq.doc_complete('q" + strconv.Itoa(shape) + "', 's" + strconv.Itoa(v) + "')" + " /* " + strconv.Itoa(shape) + " */"
	}
	for shape := range maxTemplates + 4 {
		_, err := r.Rewrite(ctx, text(shape, 0))
		require.NoError(t, err)
	}
	require.Len(t, *r.templates.list.Load(), maxTemplates)
	before := r.stats.templateHits.Load()
	_, err := r.Rewrite(ctx, text(maxTemplates+3, 1)) // recent: kept
	require.NoError(t, err)
	require.Equal(t, before+1, r.stats.templateHits.Load())
	_, err = r.Rewrite(ctx, text(0, 1)) // oldest: dropped, scanned, kept again
	require.NoError(t, err)
	require.Equal(t, before+1, r.stats.templateHits.Load())
	_, err = r.Rewrite(ctx, text(0, 2))
	require.NoError(t, err)
	require.Equal(t, before+2, r.stats.templateHits.Load())
}

// FuzzLiteralTemplate: whatever stands in a template's literal place, the
// text gets what a full parse gives it.
func FuzzLiteralTemplate(f *testing.F) {
	for _, s := range []string{"x", "it''s", "x'\n'y", `\'`, "1", "2147483648"} {
		for i := range templateTexts {
			f.Add(s, uint8(i))
		}
	}
	f.Fuzz(func(t *testing.T, v string, which uint8) {
		tt := templateTexts[int(which)%len(templateTexts)]
		primer := tt.prefix + "primer" + tt.suffix
		if tt.integer {
			primer = tt.prefix + "42" + tt.suffix
		}
		checkTemplate(t, primer, tt.prefix+v+tt.suffix)
	})
}

func BenchmarkRewriteTemplateHit(b *testing.B) { benchmarkRewriteHits(b, true) }
