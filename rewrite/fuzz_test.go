package rewrite

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fuzzCorpusDir holds FuzzRewrite seeds in Go's corpus file format, at the
// repository root. New crashers found by `go test -fuzz` land in
// rewrite/testdata/fuzz/FuzzRewrite; move them here.
const fuzzCorpusDir = "../testdata/fuzz/FuzzRewrite"

// FuzzRewrite checks that Rewrite never panics, that its errors are
// *Error values, that every call it plans renders, through (*Call).SQL,
// to a statement that plans to the same overload and arguments, and that
// the shape cache gives every text the plan a full parse gives it.
func FuzzRewrite(f *testing.F) {
	for _, sql := range goldenInputs(f) {
		f.Add(sql)
	}
	for _, sql := range corpusInputs(f) {
		f.Add(sql)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		checkRoundTrip(t, sql)
		checkShape(t, sql)
	})
}

// checkRoundTrip is the fuzz property, also run on every golden input.
func checkRoundTrip(t *testing.T, sql string) {
	t.Helper()
	ctx := context.Background()
	plan, err := New(0).Rewrite(ctx, sql)
	if err != nil {
		var e *Error
		require.True(t, errors.As(err, &e), "error %T %v", err, err)
		require.Len(t, e.Code, 5)
		require.NotEmpty(t, e.Message)
		require.GreaterOrEqual(t, e.Position, 0)
		require.LessOrEqual(t, e.Position, len([]rune(sql))+1)
	}
	if plan == nil {
		require.Error(t, err)
		return
	}
	require.Equal(t, err != nil, plan.HasCall && plan.ParamTypes == nil && hasErr(plan), "the error is the first statement error")
	if err != nil {
		return // only successful plans are rendered back
	}
	for _, st := range plan.Statements {
		require.True(t, strings.Contains(sql, st.SQL), "statement text %q not in input", st.SQL)
		if st.Call == nil {
			continue
		}
		c := st.Call
		require.Len(t, c.Args, len(c.Func.Args))
		for _, col := range c.Columns {
			require.Less(t, col.Source, len(c.Func.Out))
		}
		// Declare the parameters the call does not use, so that a
		// rendered call alone has no gap in its $n.
		used := map[int]bool{}
		for _, a := range c.Args {
			if a.Kind == ArgParam {
				used[a.Param] = true
			}
		}
		declared := make([]uint32, len(plan.ParamTypes))
		for i, oid := range plan.ParamTypes {
			if !used[i+1] {
				declared[i] = oid
			}
		}
		again := c.SQL()
		p2, err := New(0).RewriteWithParamTypes(ctx, again, declared)
		require.NoError(t, err, "%q rendered as %q", st.SQL, again)
		require.Len(t, p2.Statements, 1, again)
		c2 := p2.Statements[0].Call
		require.NotNil(t, c2, again)
		require.Equal(t, c.Func.ID, c2.Func.ID, "%q rendered as %q", st.SQL, again)
		require.Equal(t, c.Args, c2.Args, "%q rendered as %q", st.SQL, again)
	}
}

func hasErr(p *Plan) bool {
	for _, st := range p.Statements {
		if st.Err != nil {
			return true
		}
	}
	return false
}

// goldenInputs returns the statement texts of testdata/rewrite/*.sql.
func goldenInputs(tb testing.TB) []string {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.sql"))
	require.NoError(tb, err)
	var out []string
	for _, file := range files {
		b, err := os.ReadFile(file)
		require.NoError(tb, err)
		out = append(out, string(b))
	}
	return out
}

// corpusInputs reads the seed files of fuzzCorpusDir ("go test fuzz v1"
// followed by one string(...) or []byte(...) line).
func corpusInputs(tb testing.TB) []string {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(fuzzCorpusDir, "*"))
	require.NoError(tb, err)
	var out []string
	for _, file := range files {
		fh, err := os.Open(file)
		require.NoError(tb, err)
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
		require.True(tb, sc.Scan(), file)
		require.Equal(tb, "go test fuzz v1", sc.Text(), file)
		require.True(tb, sc.Scan(), file)
		line := sc.Text()
		require.NoError(tb, fh.Close())
		var lit string
		switch {
		case strings.HasPrefix(line, "string(") && strings.HasSuffix(line, ")"):
			lit = line[len("string(") : len(line)-1]
		case strings.HasPrefix(line, "[]byte(") && strings.HasSuffix(line, ")"):
			lit = line[len("[]byte(") : len(line)-1]
		default:
			tb.Fatalf("%s: unsupported corpus line %q", file, line)
		}
		s, err := strconv.Unquote(lit)
		require.NoError(tb, err, file)
		out = append(out, s)
	}
	return out
}
