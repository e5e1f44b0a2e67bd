package rewrite

import (
	"context"
	"errors"
	"strings"
	"unicode/utf8"

	pg_query "github.com/pganalyze/pg_query_go/v5"
	"github.com/pganalyze/pg_query_go/v5/parser"
)

// maxCachedLen bounds the length of a text whose plan is cached, so that a
// client sending large scripts cannot pin megabytes in the cache.
const maxCachedLen = 64 << 10

// maxParam is the highest $n accepted: the protocol counts parameters in
// an int16.
const maxParam = 65535

// passthrough is the plan of every text the pre-filter lets through.
var passthrough = &Plan{}

// Rewriter turns statement texts into Plans. It is safe for concurrent use
// by any number of sessions; it keeps an LRU cache of plans keyed by text,
// since parsing goes through cgo.
type Rewriter struct {
	cache     *lru[cacheKey, cacheEntry] // nil: no caching
	shapes    *lru[string, *shapeEntry]  // nil: no caching (see shape.go)
	templates templates                  // of recent shapes (template.go)
	stats     shapeStats
}

// New returns a Rewriter that caches the plans (and errors) of up to
// cacheSize distinct statement texts. cacheSize <= 0 disables the cache.
func New(cacheSize int) *Rewriter {
	r := &Rewriter{}
	if cacheSize > 0 {
		r.cache = newLRU[cacheKey, cacheEntry](cacheSize)
		r.shapes = newLRU[string, *shapeEntry](cacheSize)
	}
	return r
}

// Rewrite says what the statement text sql (the whole string of one Query
// message, or of one Parse message) asks for.
//
// A text that does not contain "fetchq" in any letter case is not parsed:
// Rewrite returns a shared Plan with no Statements and HasCall false, and
// the caller forwards the whole text unchanged. So does it for any text
// where HasCall is false.
//
// Otherwise the text is parsed with Postgres' own parser and every
// statement is classified (see the package documentation). Errors:
//
//   - a text that does not parse (or is not valid UTF-8) returns a nil Plan
//     and an *Error, 42601 for syntax errors (errors.Is(err, ErrSyntax));
//     nothing in the text may run, as in Postgres, which parses a whole
//     Query message before executing any of it. So does a $n whose type
//     cannot be determined (42P18: $2 used but not $1), which fails a
//     whole Parse in Postgres;
//   - a statement that calls a Fetchq function in a way that cannot be run
//     (0A000), that matches no overload (42883) or several (42725), or that
//     fails the way Postgres' analysis would fail, gets that *Error in its
//     Statement.Err; Rewrite then returns the Plan AND the first such
//     error. A caller that only looks at the error rejects the whole text;
//     one that follows Postgres exactly runs the statements before the
//     failing one and reports its Err then;
//   - ctx being done before a parse returns ctx.Err().
//
// Plans and errors are shared through the cache: callers must not modify
// them.
func (r *Rewriter) Rewrite(ctx context.Context, sql string) (*Plan, error) {
	if !containsFetchq(sql) {
		return passthrough, nil
	}
	return r.rewrite(ctx, cacheKey{sql: sql}, nil)
}

// RewriteWithParamTypes is Rewrite for a Parse message that declares the
// types of some parameters: paramTypes[i] is the type OID of $i+1, 0 for
// unspecified, as in the Parse message. Declared types take part in
// overload resolution exactly as in Postgres (a JDBC client binding an
// int4 to doc_pick($1, $2) gets the limit form, an untyped one the
// duration form), and Plan.ParamTypes then has at least len(paramTypes)
// entries. With no declared type it is the same as Rewrite.
func (r *Rewriter) RewriteWithParamTypes(ctx context.Context, sql string, paramTypes []uint32) (*Plan, error) {
	if !containsFetchq(sql) {
		return passthrough, nil
	}
	declared := false
	for _, t := range paramTypes {
		if t != 0 {
			declared = true
			break
		}
	}
	if !declared {
		return r.rewrite(ctx, cacheKey{sql: sql}, nil)
	}
	var b strings.Builder
	for _, t := range paramTypes {
		b.WriteString(itoa(int64(t)))
		b.WriteByte(',')
	}
	return r.rewrite(ctx, cacheKey{sql: sql, types: b.String()}, paramTypes)
}

func (r *Rewriter) rewrite(ctx context.Context, key cacheKey, paramTypes []uint32) (*Plan, error) {
	if r.cache != nil {
		if e, ok := r.cache.get(key); ok {
			return e.plan, e.err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if r.shapes != nil && paramTypes == nil && len(key.sql) <= maxCachedLen && checkEncoding(key.sql) == nil {
		var arr [8]literal // on the stack: instantiate copies the values
		if e, lits, ok := r.templates.match(key.sql, arr[:0]); ok {
			r.stats.hits.Add(1)
			r.stats.templateHits.Add(1)
			return e.instantiate(key.sql, lits), nil
		}
		if skey, lits, ok := scanShape(key.sql); ok {
			e, found := r.shapes.get(skey)
			if found && e.template != nil {
				r.stats.hits.Add(1)
				r.templates.add(key.sql, lits, e)
				return e.instantiate(key.sql, lits), nil
			}
			if !found {
				plan, err := analyze(key.sql, nil)
				e := buildShape(key.sql, lits, plan, err)
				if e.template != nil {
					r.stats.admitted.Add(1)
					r.templates.add(key.sql, lits, e)
				} else {
					r.stats.refused.Add(1)
				}
				r.shapes.add(skey, e)
				r.cache.add(key, cacheEntry{plan: plan, err: err})
				return plan, err
			}
		}
	}
	plan, err := analyze(key.sql, paramTypes)
	if r.cache != nil && len(key.sql) <= maxCachedLen {
		r.cache.add(key, cacheEntry{plan: plan, err: err})
	}
	return plan, err
}

// containsFetchq reports whether s contains "fetchq" in any ASCII letter
// case, without allocating.
func containsFetchq(s string) bool {
	for i := 0; i+6 <= len(s); i++ {
		if s[i]|0x20 != 'f' {
			continue
		}
		if s[i+1]|0x20 == 'e' && s[i+2]|0x20 == 't' && s[i+3]|0x20 == 'c' &&
			s[i+4]|0x20 == 'h' && s[i+5]|0x20 == 'q' {
			return true
		}
	}
	return false
}

// analyze parses sql and builds its Plan. It is the uncached path.
func analyze(sql string, declared []uint32) (*Plan, error) {
	if err := checkEncoding(sql); err != nil {
		return nil, err
	}
	tree, err := pg_query.Parse(sql)
	if err != nil {
		return nil, parseError(err)
	}
	a := newAnalyzer(sql, declared)
	plan := &Plan{Statements: make([]Statement, 0, len(tree.Stmts))}
	var first error
	for _, raw := range tree.Stmts {
		start := int(raw.StmtLocation)
		end := len(sql)
		if raw.StmtLen > 0 {
			end = start + int(raw.StmtLen)
		}
		if start < 0 || start > end || end > len(sql) {
			start, end = 0, len(sql) // never seen; stay safe
		}
		st := Statement{SQL: strings.TrimSpace(sql[start:end]), TxControl: raw.Stmt.GetTransactionStmt() != nil}
		call, serr := a.statement(raw.Stmt)
		if serr != nil {
			st.Err = serr
			if first == nil {
				first = serr
			}
		} else {
			st.Call = call
		}
		if st.Call != nil || st.Err != nil {
			plan.HasCall = true
		}
		plan.Statements = append(plan.Statements, st)
	}
	if plan.HasCall && first == nil {
		types, perr := a.paramTypes()
		if perr != nil {
			// Postgres fails the whole Parse: no statement may run.
			return nil, perr
		}
		plan.ParamTypes = types
	}
	return plan, first
}

// checkEncoding rejects what Postgres rejects before parsing: NUL bytes
// (which cannot travel in a protocol string) and invalid UTF-8.
func checkEncoding(sql string) *Error {
	if i := strings.IndexByte(sql, 0); i >= 0 {
		return &Error{Code: "22021", Message: `invalid byte sequence for encoding "UTF8": 0x00`}
	}
	if !utf8.ValidString(sql) {
		for i := 0; i < len(sql); {
			r, n := utf8.DecodeRuneInString(sql[i:])
			if r == utf8.RuneError && n == 1 {
				return &Error{Code: "22021", Message: `invalid byte sequence for encoding "UTF8": 0x` + hexByte(sql[i])}
			}
			i += n
		}
	}
	return nil
}

func hexByte(b byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&15]})
}

// parseError turns a pg_query failure into an *Error.
func parseError(err error) *Error {
	var pe *parser.Error
	if errors.As(err, &pe) {
		e := &Error{Code: "42601", Message: pe.Message, Position: pe.Cursorpos, syntax: true}
		switch {
		case strings.HasPrefix(pe.Message, "invalid byte sequence"):
			e.Code, e.syntax = "22021", false
		case strings.HasPrefix(pe.Message, "stack depth limit exceeded"):
			e.Code, e.syntax = "54001", false
		}
		return e
	}
	// pg_query could not decode its own parse tree (in practice: nesting
	// deeper than the protobuf recursion limit).
	return &Error{Code: "54001", Message: "statement too complex: " + err.Error()}
}

// charPos converts a byte offset from the parse tree into the 1-based
// character position Postgres reports; 0 when unknown.
func charPos(sql string, loc int32) int {
	if loc < 0 || int(loc) > len(sql) {
		return 0
	}
	return utf8.RuneCountInString(sql[:loc]) + 1
}
