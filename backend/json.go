package backend

import (
	"context"
	"strings"
	"unicode/utf8"
)

// DedoubleQuotes replaces each pair of consecutive single quotes in a JSON
// argument's text with one single quote, scanning left to right (so three
// quotes become two, four become two). A lone single quote is kept.
//
// Why: Fetchq 4.0.2 prints jsonb payload and details arguments into dynamic
// SQL between single quotes without escaping, so Postgres parses them a
// second time as string literals. The Node client compensates by writing each
// ' of a JSON value as four quotes inside its SQL literal, so the function
// receives it with the quote doubled and the extension stores it's. Applying this
// de-doubling once before storing reproduces what the extension stores for
// every input it accepts. Unlike 4.0.2 (where a lone quote breaks the
// statement), a lone quote is stored as it is, so clients that escape the
// ordinary way (psycopg, JDBC, pgx parameters) also store it's. The one
// value that cannot round-trip is a JSON string holding two consecutive
// single quotes: it is stored with one (spec §4.3).
//
// De-doubling never changes whether a text is valid jsonb input: a single
// quote can only stand inside a JSON string, where one or two of them are
// equally valid.
func DedoubleQuotes(s string) string {
	if !strings.Contains(s, "''") {
		return s
	}
	return strings.ReplaceAll(s, "''", "'")
}

// Validating jsonb arguments.
//
// In the extension a payload or details argument is jsonb, so Postgres'
// jsonb input function checks it before the function runs, with its own
// SQLSTATEs and messages: 22P02 for bad syntax or a lone surrogate escape,
// 22P05 for \u0000, 22003 for a number out of numeric's range, 54001 for
// nesting beyond the stack depth limit, 54000 for a value over 256 MB.
// Rather than copy those rules, the proxy lets Postgres decide every case
// it cannot vouch for:
//
//   - scanJSON reads the text once and reports whether it is "plain": JSON
//     that jsonb input accepts whatever the server's limits (valid UTF-8,
//     no \u0000 or unpaired surrogate escape, at most plainMaxDepth levels,
//     short numbers with small exponents, well under jsonb's size limits).
//     Nearly every payload is plain and costs nothing more: the statement
//     that stores it casts it to jsonb anyway, and that cast cannot fail.
//   - Any other text is sent to Postgres by [Store.Invoke], on the call's
//     own connection, in one statement that first checks USAGE on schema
//     fetchq (as calling the extension's function would) and then casts it
//     to jsonb. Its error, if any, is Postgres' own.
//
// The connection is assumed to use UTF8, as everywhere in the proxy.

// Limits of a plain JSON text. Postgres' own limits are far above them:
// nesting is bounded by max_stack_depth (100 kB at least, thousands of
// levels by default), numeric accepts 131072 digits before the point and
// 16383 after, a jsonb container holds up to 256 MB, an object up to about
// 13 million pairs.
const (
	plainMaxDepth     = 64
	plainMaxNumberLen = 100
	plainMaxExpDigits = 3 // exponents up to ±999
	plainMaxValues    = 1 << 20
	// plainMaxSize bounds len(text) + plainValueOverhead*values, which is
	// at least the size of the jsonb value: each string or key is no longer
	// than its text, and a JEntry, alignment and a numeric's header fit in
	// the overhead.
	plainMaxSize       = 1<<28 - 1
	plainValueOverhead = 16
)

// scanJSON reports whether s is JSON text (RFC 8259 grammar, any depth)
// and whether it is plain, i.e. certainly accepted by Postgres' jsonb input
// (see the limits above). A text that is not valid is never plain. It never
// recurses, so any depth is safe.
func scanJSON(s string) (valid, plain bool) {
	sc := jsonScanner{s: s, plain: true}
	if !sc.scan() {
		return false, false
	}
	plain = sc.plain && sc.maxDepth <= plainMaxDepth && sc.values <= plainMaxValues &&
		len(s)+plainValueOverhead*(sc.values+1) <= plainMaxSize && utf8.ValidString(s)
	return true, plain
}

// jsonScanner is the state of one scanJSON.
type jsonScanner struct {
	s        string
	i        int
	stack    []byte // open containers: '{' or '['
	maxDepth int
	values   int // scalars, containers and keys
	plain    bool
}

func (sc *jsonScanner) ws() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\n', '\r':
			sc.i++
		default:
			return
		}
	}
}

func (sc *jsonScanner) peek() byte {
	if sc.i < len(sc.s) {
		return sc.s[sc.i]
	}
	return 0
}

// scan checks the whole text.
func (sc *jsonScanner) scan() bool {
value:
	for {
		// A value starts here.
		sc.ws()
		sc.values++
		switch c := sc.peek(); {
		case c == '{' || c == '[':
			sc.i++
			sc.stack = append(sc.stack, c)
			sc.maxDepth = max(sc.maxDepth, len(sc.stack))
			sc.ws()
			if sc.peek() == c+2 { // '}' or ']'
				sc.i++
				sc.stack = sc.stack[:len(sc.stack)-1]
				break
			}
			if c == '{' && !sc.key() {
				return false
			}
			continue value
		case c == '"':
			if !sc.str() {
				return false
			}
		case c == '-' || (c >= '0' && c <= '9'):
			if !sc.number() {
				return false
			}
		case c == 't':
			if !sc.literal("true") {
				return false
			}
		case c == 'f':
			if !sc.literal("false") {
				return false
			}
		case c == 'n':
			if !sc.literal("null") {
				return false
			}
		default:
			return false
		}
		// A value ended: close containers, or go on to the next element.
		for {
			sc.ws()
			if len(sc.stack) == 0 {
				return sc.i == len(sc.s)
			}
			top := sc.stack[len(sc.stack)-1]
			switch c := sc.peek(); {
			case c == ',':
				sc.i++
				if top == '{' {
					sc.ws()
					if !sc.key() {
						return false
					}
				}
				continue value
			case c == top+2:
				sc.i++
				sc.stack = sc.stack[:len(sc.stack)-1]
			default:
				return false
			}
		}
	}
}

// key reads an object key and its colon.
func (sc *jsonScanner) key() bool {
	if sc.peek() != '"' {
		return false
	}
	sc.values++
	if !sc.str() {
		return false
	}
	sc.ws()
	if sc.peek() != ':' {
		return false
	}
	sc.i++
	return true
}

func (sc *jsonScanner) literal(word string) bool {
	if !strings.HasPrefix(sc.s[sc.i:], word) {
		return false
	}
	sc.i += len(word)
	return true
}

// str reads a string starting at its opening quote.
func (sc *jsonScanner) str() bool {
	s := sc.s
	i := sc.i + 1
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"':
			sc.i = i + 1
			return true
		case c < 0x20:
			return false
		case c != '\\':
			i++
			continue
		}
		if i+1 >= len(s) {
			return false
		}
		switch s[i+1] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			i += 2
			continue
		case 'u':
		default:
			return false
		}
		r, ok := hex4(s, i+2)
		if !ok {
			return false
		}
		i += 6
		switch {
		case r == 0:
			sc.plain = false // 22P05 in jsonb
		case r >= 0xDC00 && r <= 0xDFFF:
			sc.plain = false // a low surrogate first: 22P02
		case r >= 0xD800 && r <= 0xDBFF:
			// Plain only when a low surrogate escape follows.
			lo, ok := rune(0), false
			if i+1 < len(s) && s[i] == '\\' && s[i+1] == 'u' {
				lo, ok = hex4(s, i+2)
			}
			if ok && lo >= 0xDC00 && lo <= 0xDFFF {
				i += 6
			} else {
				sc.plain = false
			}
		}
	}
	return false
}

// hex4 decodes the four hex digits at s[i:].
func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[i : i+4]) {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number reads a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (sc *jsonScanner) number() bool {
	s := sc.s
	start, i := sc.i, sc.i
	if s[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		for i < len(s) && s[i] == '0' {
			i++ // leading zeros of the exponent do not count
		}
		n := digits()
		if n == 0 && s[i-1] != '0' {
			return false
		}
		if n > plainMaxExpDigits {
			sc.plain = false
		}
	}
	if i-start > plainMaxNumberLen {
		sc.plain = false
	}
	sc.i = i
	return true
}

// checkJSON returns Postgres' 22P02 error if s is not JSON text. Text that
// is JSON may still be refused by jsonb input (see scanJSON); Invoke asks
// Postgres about those.
func checkJSON(s string) error {
	if valid, _ := scanJSON(s); !valid {
		return errInvalidJSON("")
	}
	return nil
}

// jsonArg validates a jsonb argument (see checkJSON) and returns the text
// to store.
func jsonArg(s string) (string, error) {
	if err := checkJSON(s); err != nil {
		return "", err
	}
	return DedoubleQuotes(s), nil
}

// plainArgs reports whether every jsonb argument of a call of the overload
// id is plain JSON text, which Postgres' jsonb input certainly accepts, so
// that no argument needs Postgres' own check on the client's connection
// (see [Store.Invoke]). A call with other jsonb text must not be batched on
// the service pool: Invoke checks it with the client's role first.
func plainArgs(id string, args []Value) bool {
	o, ok := overloadsByID[id]
	if !ok {
		return true
	}
	for i, t := range o.args {
		if t != argJSONB || i >= len(args) || args[i].Null || args[i].Now || args[i].Epoch {
			continue
		}
		if _, plain := scanJSON(args[i].Text); !plain {
			return false
		}
	}
	return true
}

// usageSQL fails with Postgres' own 42501 "permission denied for schema
// fetchq" when the session's role lacks USAGE on schema fetchq, which
// Postgres checks before it runs any function of the extension. It passes
// when the schema does not exist yet (before init()). argSQL also casts
// its parameter to jsonb, after that check: the subquery with OFFSET 0
// keeps the cast from being folded (and failing) while planning.
const (
	usageSQL = "SELECT pg_catalog.to_regclass('fetchq.queues') IS NULL"
	argSQL   = "SELECT pg_catalog.to_regclass('fetchq.queues') IS NULL, x::jsonb IS NULL FROM (SELECT $1::text OFFSET 0) a(x)"
)

// checkUsage runs usageSQL on db, or argSQL when payload is not nil.
func checkUsage(ctx context.Context, db DB, payload *string) error {
	if payload == nil {
		_, err := db.Query(ctx, usageSQL, nil, noScan)
		return err
	}
	_, err := db.Query(ctx, argSQL, args{*payload}, noScan)
	return err
}
