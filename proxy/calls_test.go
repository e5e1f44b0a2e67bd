package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// Call scripts: data-driven tests of the Fetchq API through the proxy, in
// testdata/calls/*.test. Each block is
//
//	query                      (or: query nosort)
//	<SQL, one or more lines>
//	----
//	<col>:<type> | <col>:<type>
//	<v> | <v>                  (one line per row; NULL for NULL)
//	<blank line>
//
// or
//
//	error <SQLSTATE>
//	<SQL>
//	----
//	<message>
//	<blank line>
//
// In expected values `*` matches anything. Rows are compared in order.
// Every script runs in a fresh database through the proxy, once per pgx
// query-exec mode; all modes must give the expected output. Run with
// -update to rewrite the expected output from the simple protocol run
// (then review the diff: the expectations pin Fetchq 4.0.2's behaviour).

var update = flag.Bool("update", false, "rewrite testdata/calls expectations")

type callCase struct {
	comment string // lines before the case, kept by -update
	kind    string // query or error
	sql     string
	code    string // error: SQLSTATE
	want    []string
	lineNum int
}

func parseCallScript(t *testing.T, path string) []callCase {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var cases []callCase
	var cur *callCase
	var comment strings.Builder
	inSQL, inWant := false, false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		l := sc.Text()
		switch {
		case cur == nil:
			if strings.HasPrefix(l, "#") {
				comment.WriteString(l + "\n")
				continue
			}
			if strings.TrimSpace(l) == "" {
				continue
			}
			f := strings.Fields(l)
			c := callCase{kind: f[0], lineNum: line, comment: comment.String()}
			comment.Reset()
			switch f[0] {
			case "query":
			case "error":
				require.Len(t, f, 2, "%s:%d: error needs a SQLSTATE", path, line)
				c.code = f[1]
			default:
				t.Fatalf("%s:%d: unknown directive %q", path, line, l)
			}
			cases = append(cases, c)
			cur = &cases[len(cases)-1]
			inSQL = true
		case inSQL:
			if l == "----" {
				inSQL, inWant = false, true
				continue
			}
			if cur.sql != "" {
				cur.sql += "\n"
			}
			cur.sql += l
		case inWant:
			if strings.TrimSpace(l) == "" {
				cur, inWant = nil, false
				continue
			}
			cur.want = append(cur.want, l)
		}
	}
	require.NoError(t, sc.Err())
	return cases
}

// typeNames names the result types call scripts show.
var typeNames = map[uint32]string{
	16: "bool", 20: "int8", 21: "int2", 23: "int4", 25: "text", 114: "json",
	1043: "varchar", 1184: "timestamptz", 1114: "timestamp", 2950: "uuid",
	3802: "jsonb", 2249: "record", 1700: "numeric", 701: "float8",
}

// formatValue renders a decoded value the same way whatever the exec mode.
func formatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case bool:
		if x {
			return "t"
		}
		return "f"
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case string:
		return x
	case []byte:
		return string(x)
	case map[string]any, []any:
		b, _ := json.Marshal(x)
		return string(b)
	case [16]byte:
		return fmt.Sprintf("%x-%x-%x-%x-%x", x[0:4], x[4:6], x[6:8], x[8:10], x[10:16])
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}

// runCall runs one case and returns its output lines.
func runCallCase(ctx context.Context, conn *pgx.Conn, c callCase) []string {
	rows, err := conn.Query(ctx, c.sql)
	var out []string
	if err == nil {
		fds := rows.FieldDescriptions()
		var head []string
		for _, fd := range fds {
			tn := typeNames[fd.DataTypeOID]
			if tn == "" {
				tn = strconv.Itoa(int(fd.DataTypeOID))
			}
			head = append(head, fd.Name+":"+tn)
		}
		out = append(out, strings.Join(head, " | "))
		for rows.Next() {
			vals, verr := rows.Values()
			if verr != nil {
				err = verr
				break
			}
			var cells []string
			for _, v := range vals {
				cells = append(cells, formatValue(v))
			}
			out = append(out, strings.Join(cells, " | "))
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			return []string{"error " + pgErr.Code, pgErr.Message}
		}
		return []string{"error", err.Error()}
	}
	if len(out) == 1 && out[0] == "" {
		out[0] = "(no columns)"
	}
	return out
}

func matchLine(want, got string) bool {
	if want == got {
		return true
	}
	wc, gc := strings.Split(want, " | "), strings.Split(got, " | ")
	if len(wc) != len(gc) {
		return false
	}
	for i := range wc {
		if wc[i] != "*" && wc[i] != gc[i] {
			return false
		}
	}
	return true
}

func TestCallScripts(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../testdata/calls/*.test")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".test"), func(t *testing.T) {
			t.Parallel()
			cases := parseCallScript(t, path)
			modes := execModes
			if *update {
				modes = []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol}
			}
			var got [][]string
			for _, mode := range modes {
				b := setupFetchq(t)
				cfg, err := pgx.ParseConfig(b.proxyDSN("", ""))
				require.NoError(t, err)
				cfg.DefaultQueryExecMode = mode
				ctx := ctxT(t, 2*time.Minute)
				conn, err := pgx.ConnectConfig(ctx, cfg)
				require.NoError(t, err)
				got = got[:0]
				for _, c := range cases {
					out := runCallCase(ctx, conn, c)
					got = append(got, out)
					if *update {
						continue
					}
					where := fmt.Sprintf("%s:%d (%s)\n%s", path, c.lineNum, mode, c.sql)
					if c.kind == "error" {
						require.Equal(t, []string{"error " + c.code}, out[:1], where+"\n"+strings.Join(out, "\n"))
						if len(c.want) > 0 {
							require.Equal(t, c.want[0], out[1], where)
						}
						continue
					}
					require.Len(t, out, len(c.want), "%s\nwant:\n%s\ngot:\n%s", where, strings.Join(c.want, "\n"), strings.Join(out, "\n"))
					for i := range out {
						require.True(t, matchLine(c.want[i], out[i]), "%s\nline %d\nwant: %s\ngot:  %s\nall:\n%s", where, i, c.want[i], out[i], strings.Join(out, "\n"))
					}
				}
				conn.Close(ctx)
			}
			if *update {
				writeCallScript(t, path, cases, got)
			}
		})
	}
}

// writeCallScript rewrites a script with the observed output, keeping the
// `*` wildcards of the old expectations where they still match.
func writeCallScript(t *testing.T, path string, cases []callCase, got [][]string) {
	var b strings.Builder
	for i, c := range cases {
		out := got[i]
		b.WriteString(c.comment)
		if len(out) > 0 && strings.HasPrefix(out[0], "error ") {
			fmt.Fprintf(&b, "error %s\n%s\n----\n%s\n\n", strings.TrimPrefix(out[0], "error "), c.sql, out[1])
			continue
		}
		fmt.Fprintf(&b, "query\n%s\n----\n", c.sql)
		for j, l := range out {
			if j < len(c.want) && matchLine(c.want[j], l) {
				l = c.want[j]
			}
			b.WriteString(l + "\n")
		}
		b.WriteString("\n")
	}
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
}
