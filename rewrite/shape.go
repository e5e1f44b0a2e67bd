package rewrite

import (
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	pg_query "github.com/pganalyze/pg_query_go/v5"
	"github.com/pganalyze/pg_query_go/v5/parser"
	"google.golang.org/protobuf/encoding/protowire"
)

// Shape cache.
//
// Fetchq clients splice values into their SQL text: every doc_push and
// doc_complete the Node client sends is a text never seen before, so the
// text cache misses and each call would pay a full parse (cgo, then
// decoding and walking the protobuf tree: most of the proxy's CPU for a
// push). The shape cache keys a plan by the text with its bare literal
// arguments masked, found with Postgres' own scanner (pg_query.Scan, several
// times cheaper than a parse):
//
//	SELECT * FROM fetchq.doc_push('q', 's1', 0, 0, NOW(), '{}')
//	SELECT * FROM fetchq.doc_push('q', 's2', 0, 0, NOW(), '{}')
//
// share one shape, and the plan of the second is the first's with the
// values of the masked literals put in.
//
// Masked are only a plain '...' string literal or a decimal integer literal
// standing alone as an argument (after "(" or "," and before "," or ")").
// Everything else (E'' and $$ strings, casts, intervals, to_timestamp(...),
// negative numbers) stays in the key verbatim. A shape is admitted only
// once a probe shows that substitution is exact: the text is analysed again
// with every masked literal replaced by a unique probe value of the same
// kind, and the two plans must be identical except for exactly one constant
// argument per masked literal, holding the probe value in one plan and the
// literal's own value in the other. A literal the analysis converts (a
// string going to an integer parameter, a varchar truncated by a typmod)
// fails the probe, and so does anything else the value could influence;
// such shapes are remembered as refused and always take the full parse.
//
// Only single-statement texts with a call and no error are shaped, and only
// when no parameter types are declared.

// maskByte replaces a masked literal in a shape key; statement texts cannot
// contain NUL (checkEncoding refuses it), so a key cannot be forged.
const maskByte = 0

// shapeEntry is a cached shape: a template plan and, for each masked
// literal in order, where its value goes. A nil template marks a refused
// shape.
type shapeEntry struct {
	template *Plan
	slots    []int // index into template.Statements[0].Call.Args
	// start and suffix locate the statement's own text: it begins at byte
	// start and ends suffix bytes before the end of the text (both lie
	// outside every literal, so they do not move with the values).
	start, suffix int
	// templated is set while a literal template of the shape is kept
	// (template.go).
	templated atomic.Bool
}

// literal is one masked literal of a text.
type literal struct {
	start, end int    // byte range of the token in the text
	value      string // the value Postgres decodes
	integer    bool
}

// shapeStats counts shape-cache outcomes, for tests and benchmarks.
type shapeStats struct {
	hits, refused, admitted atomic.Int64
	templateHits            atomic.Int64 // hits found by a literal template, without a scan
}

// scanShape scans sql and returns its shape key and masked literals. ok is
// false when the text has nothing to mask or does not scan.
func scanShape(sql string) (key string, lits []literal, ok bool) {
	var arr [64]scanToken
	toks, err := scanTokens(sql, arr[:0])
	if err != nil {
		return "", nil, false
	}
	var b strings.Builder
	last := 0
	for i, t := range toks {
		if t.token != pg_query.Token_SCONST && t.token != pg_query.Token_ICONST {
			continue
		}
		if i == 0 || i+1 == len(toks) {
			continue
		}
		prev, next := toks[i-1].token, toks[i+1].token
		if (prev != pg_query.Token_ASCII_40 && prev != pg_query.Token_ASCII_44) ||
			(next != pg_query.Token_ASCII_41 && next != pg_query.Token_ASCII_44) {
			continue
		}
		start, end := int(t.start), int(t.end)
		if start < last || end > len(sql) || start >= end {
			return "", nil, false
		}
		raw := sql[start:end]
		lit := literal{start: start, end: end}
		if t.token == pg_query.Token_ICONST {
			v, ok := decimalInt(raw)
			if !ok {
				continue
			}
			lit.value, lit.integer = v, true
		} else {
			v, ok := plainString(raw)
			if !ok {
				continue
			}
			lit.value = v
		}
		if len(lits) == 0 {
			b.Grow(len(sql))
		}
		b.WriteString(sql[last:start])
		b.WriteByte(maskByte)
		if lit.integer {
			b.WriteByte('i')
		} else {
			b.WriteByte('s')
		}
		last = end
		lits = append(lits, lit)
	}
	if len(lits) == 0 {
		return "", nil, false
	}
	b.WriteString(sql[last:])
	return b.String(), lits, true
}

// scanToken is one token of Postgres' scanner, as pg_query reports it.
type scanToken struct {
	start, end int32
	token      pg_query.Token
}

// scanTokens runs Postgres' scanner on sql (through pg_query) and appends
// its tokens to dst. It decodes pg_query's protobuf ScanResult straight from
// the wire format: the generic decoder costs more than the scan itself.
func scanTokens(sql string, dst []scanToken) ([]scanToken, error) {
	buf, err := parser.ScanToProtobuf(sql)
	if err != nil {
		return nil, err
	}
	for len(buf) > 0 {
		num, typ, n := protowire.ConsumeTag(buf)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		buf = buf[n:]
		if num == 2 && typ == protowire.BytesType { // ScanResult.tokens
			msg, n := protowire.ConsumeBytes(buf)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			buf = buf[n:]
			t, err := decodeScanToken(msg)
			if err != nil {
				return nil, err
			}
			dst = append(dst, t)
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, buf)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		buf = buf[n:]
	}
	return dst, nil
}

// decodeScanToken decodes one ScanToken message: start (1), end (2) and
// token (4) are varints; other fields are skipped.
func decodeScanToken(msg []byte) (scanToken, error) {
	var t scanToken
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return t, protowire.ParseError(n)
		}
		msg = msg[n:]
		if typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(msg)
			if n < 0 {
				return t, protowire.ParseError(n)
			}
			msg = msg[n:]
			switch num {
			case 1:
				t.start = int32(v)
			case 2:
				t.end = int32(v)
			case 4:
				t.token = pg_query.Token(v)
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, msg)
		if n < 0 {
			return t, protowire.ParseError(n)
		}
		msg = msg[n:]
	}
	return t, nil
}

// decimalInt returns the value of an integer literal made of decimal
// digits only that fits in an int4 (the scanner makes larger ones FCONST),
// as the analysis writes it.
func decimalInt(raw string) (string, bool) {
	for i := 0; i < len(raw); i++ {
		if raw[i] < '0' || raw[i] > '9' {
			return "", false
		}
	}
	n, err := strconv.ParseInt(raw, 10, 32)
	if err != nil {
		return "", false
	}
	return strconv.FormatInt(n, 10), true
}

// plainString decodes a '...' literal whose only escape is a doubled quote
// (standard_conforming_strings, as the parser assumes). Literals continued
// over a newline ('a'\n'b'), E”, U&”, B”, X” and dollar quoting are not
// plain.
func plainString(raw string) (string, bool) {
	if len(raw) < 2 || raw[0] != '\'' || raw[len(raw)-1] != '\'' {
		return "", false
	}
	body := raw[1 : len(raw)-1]
	if !strings.Contains(body, "'") {
		return body, true
	}
	var b strings.Builder
	b.Grow(len(body))
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c == '\'' {
			if i+1 >= len(body) || body[i+1] != '\'' {
				return "", false
			}
			i++
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

// probeText returns sql with each masked literal replaced by a probe value
// of its kind, and the probe values as the analysis will write them.
func probeText(sql string, lits []literal) (string, []string) {
	var b strings.Builder
	probes := make([]string, len(lits))
	last := 0
	for i, l := range lits {
		b.WriteString(sql[last:l.start])
		if l.integer {
			// Distinct, within int4, and not a value a client plausibly
			// writes next to it; uniqueness is checked anyway.
			probes[i] = strconv.Itoa(1987654321 - i)
			b.WriteString(probes[i])
		} else {
			probes[i] = "fetchq-shape-probe-" + strconv.Itoa(i)
			b.WriteString("'" + probes[i] + "'")
		}
		last = l.end
	}
	b.WriteString(sql[last:])
	return b.String(), probes
}

// buildShape checks the plan of sql (analysed in full) against the plan of
// its probe text and returns the shape entry, or a refused entry.
func buildShape(sql string, lits []literal, plan *Plan, err error) *shapeEntry {
	refused := &shapeEntry{}
	if err != nil || plan == nil || !plan.HasCall || len(plan.Statements) != 1 {
		return refused
	}
	st := plan.Statements[0]
	if st.Call == nil || st.Err != nil {
		return refused
	}
	ptext, probes := probeText(sql, lits)
	pplan, perr := analyze(ptext, nil)
	if perr != nil || pplan == nil || len(pplan.Statements) != 1 || pplan.Statements[0].Call == nil {
		return refused
	}
	pc, c := pplan.Statements[0].Call, st.Call
	if pc.Func != c.Func || len(pc.Args) != len(c.Args) || !slices.Equal(pc.Columns, c.Columns) ||
		!slices.Equal(pplan.ParamTypes, plan.ParamTypes) || pplan.HasCall != plan.HasCall {
		return refused
	}
	slots := make([]int, len(lits))
	for i := range slots {
		slots[i] = -1
	}
	for j, pa := range pc.Args {
		a := c.Args[j]
		if pa.Kind != a.Kind || pa.Param != a.Param || pa.Negative != a.Negative {
			return refused
		}
		owner := -1
		for i, p := range probes {
			if pa.Kind == ArgConst && pa.Text == p {
				if owner >= 0 || slots[i] >= 0 {
					return refused // ambiguous
				}
				owner = i
			}
		}
		switch {
		case owner >= 0:
			if a.Text != lits[owner].value || !verbatimType(c.Func.Args[j].Type, lits[owner].integer) {
				return refused
			}
			slots[owner] = j
		case pa.Text != a.Text:
			return refused // a value that depends on a masked literal
		}
	}
	for _, s := range slots {
		if s < 0 {
			return refused // a masked literal that is not an argument
		}
	}
	// Locate the statement's own text.
	i := strings.Index(sql, st.SQL)
	if i < 0 || i > lits[0].start || i+len(st.SQL) < lits[len(lits)-1].end {
		return refused
	}
	return &shapeEntry{template: plan, slots: slots, start: i, suffix: len(sql) - i - len(st.SQL)}
}

// verbatimType reports whether a literal of the kind goes to a parameter
// of type t with its value unchanged.
func verbatimType(t Type, integer bool) bool {
	if integer {
		return t == TypeInt4 || t == TypeInt8
	}
	switch t {
	case TypeVarchar, TypeText, TypeJSONB, TypeTimestamptz, TypeUUID:
		return true
	}
	return false
}

// instantiate returns the plan of sql from its shape: the template with the
// literal values put in.
func (e *shapeEntry) instantiate(sql string, lits []literal) *Plan {
	t := e.template.Statements[0]
	// One allocation for the plan, its statement, call and arguments.
	box := &instance{}
	args := box.args[:0]
	if len(t.Call.Args) > len(box.args) {
		args = make([]Arg, 0, len(t.Call.Args))
	}
	args = append(args, t.Call.Args...)
	for i, j := range e.slots {
		args[j].Text = lits[i].value
	}
	box.call = Call{Func: t.Call.Func, Args: args, Columns: t.Call.Columns}
	box.stmts[0] = Statement{SQL: sql[e.start : len(sql)-e.suffix], Call: &box.call}
	box.plan = Plan{Statements: box.stmts[:], HasCall: true, ParamTypes: e.template.ParamTypes}
	return &box.plan
}

// instance holds what instantiate makes. Fetchq functions take at most 6
// arguments.
type instance struct {
	plan  Plan
	stmts [1]Statement
	call  Call
	args  [6]Arg
}
