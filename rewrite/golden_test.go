package rewrite

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/rewrite")

// goldenDir holds NAME.sql inputs and NAME.golden renderings of their
// plans, at the repository root.
const goldenDir = "../testdata/rewrite"

// TestGolden rewrites every testdata/rewrite/*.sql and compares the
// rendering of the result with NAME.golden. Run with -update to write
// them. A NAME.sql may start with a line "-- params: 23,0" declaring
// parameter types, as a Parse message does.
func TestGolden(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.sql"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 40, "golden cases")
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".sql")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			in, err := os.ReadFile(file)
			require.NoError(t, err)
			got := renderResult(t, string(in))
			golden := filepath.Join(goldenDir, name+".golden")
			if *update {
				require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
				return
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run go test ./rewrite -update")
			require.Equal(t, string(want), got)
		})
	}
}

// renderResult rewrites sql (with a fresh Rewriter) and renders the plan.
func renderResult(t *testing.T, sql string) string {
	t.Helper()
	var declared []uint32
	if first, _, ok := strings.Cut(sql, "\n"); ok && strings.HasPrefix(first, "-- params:") {
		for _, f := range strings.Split(strings.TrimSpace(strings.TrimPrefix(first, "-- params:")), ",") {
			var oid uint32
			_, err := fmt.Sscan(f, &oid)
			require.NoError(t, err)
			declared = append(declared, oid)
		}
	}
	plan, err := New(0).RewriteWithParamTypes(context.Background(), sql, declared)
	return renderPlan(plan, err)
}

// renderPlan is the readable form of a Rewrite result used by the golden
// files.
func renderPlan(plan *Plan, err error) string {
	var b strings.Builder
	if plan == nil {
		b.WriteString("plan: none\n")
	} else {
		fmt.Fprintf(&b, "has call: %v\n", plan.HasCall)
		if plan.ParamTypes != nil {
			b.WriteString("param types:")
			for i, oid := range plan.ParamTypes {
				fmt.Fprintf(&b, " $%d %s (%d)", i+1, Type(oid), oid)
			}
			b.WriteByte('\n')
		}
		for i, st := range plan.Statements {
			fmt.Fprintf(&b, "\nstatement %d: %q\n", i+1, st.SQL)
			switch {
			case st.Err != nil:
				b.WriteString("  statement error:\n")
				renderError(&b, "    ", st.Err)
			case st.Call == nil:
				b.WriteString("  forward\n")
			default:
				renderCall(&b, st.Call)
			}
		}
	}
	if err != nil {
		b.WriteString("\nerror:\n")
		renderError(&b, "  ", err)
	}
	return b.String()
}

func renderCall(b *strings.Builder, c *Call) {
	f := c.Func
	fmt.Fprintf(b, "  call: %s -> %s\n", f.ID, returnKindName(f.Returns))
	for i, a := range c.Args {
		p := f.Args[i]
		fmt.Fprintf(b, "    arg %s %s = %s\n", p.Name, p.Type, renderArg(a))
	}
	if len(c.Columns) == 0 {
		b.WriteString("  columns: none\n")
	} else {
		b.WriteString("  columns:\n")
	}
	for _, col := range c.Columns {
		src := "whole row"
		if col.Source >= 0 {
			src = "out " + f.Out[col.Source].Name
		}
		comp := ""
		if col.Composite {
			comp = " composite"
		}
		fmt.Fprintf(b, "    %s %s (%d)%s <- %s\n", col.Name, Type(col.TypeOID), col.TypeOID, comp, src)
	}
	fmt.Fprintf(b, "  sql: %s\n", c.SQL())
}

func renderArg(a Arg) string {
	switch a.Kind {
	case ArgConst:
		return fmt.Sprintf("const %q", a.Text)
	case ArgNull:
		return "null"
	case ArgParam:
		return fmt.Sprintf("$%d", a.Param)
	case ArgNow:
		switch {
		case a.Text == "":
			return "now"
		case a.Negative:
			return fmt.Sprintf("now - interval %q", a.Text)
		}
		return fmt.Sprintf("now + interval %q", a.Text)
	case ArgEpoch:
		return "epoch " + a.Text
	}
	return fmt.Sprintf("kind %d", a.Kind)
}

func returnKindName(k ReturnKind) string {
	switch k {
	case ReturnScalar:
		return "scalar"
	case ReturnRecord:
		return "record"
	case ReturnSet:
		return "set"
	}
	return fmt.Sprint(int(k))
}

func renderError(b *strings.Builder, indent string, err error) {
	var e *Error
	if !errors.As(err, &e) {
		fmt.Fprintf(b, "%snot an *Error: %v\n", indent, err)
		return
	}
	fmt.Fprintf(b, "%scode: %s\n%smessage: %s\n", indent, e.Code, indent, e.Message)
	if e.Detail != "" {
		fmt.Fprintf(b, "%sdetail: %s\n", indent, e.Detail)
	}
	if e.Hint != "" {
		fmt.Fprintf(b, "%shint: %s\n", indent, e.Hint)
	}
	if e.Position != 0 {
		fmt.Fprintf(b, "%sposition: %d\n", indent, e.Position)
	}
	if errors.Is(err, ErrSyntax) {
		fmt.Fprintf(b, "%ssyntax error\n", indent)
	}
}
