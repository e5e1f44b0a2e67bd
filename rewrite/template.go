package rewrite

import (
	"strings"
	"sync"
	"sync/atomic"
)

// Literal templates.
//
// A shape hit still costs a scan of the text (Postgres' scanner, through
// cgo): several microseconds for a text a Fetchq client sends thousands of
// times a second with only its values changed. A literal template
// recognises such a text without scanning it: it is the text of an
// admitted shape cut at its masked literals,
//
//	SELECT * FROM fetchq.doc_complete(|'q'|, |'s1'|);
//
// and a text matches it when it is the same cuts around literals of the
// same kinds: a '...' string whose only quotes are doubled ones, or
// decimal digits that fit in an int4. No SQL is tokenized here: the
// template's own scan showed where its literals begin and end, and a text
// that differs only inside them, by literals of those forms, scans the
// same way. A string ends at its first lone quote and what follows it is
// the template's own text, so nothing after it can continue it (a quote
// there would have continued the template's literal too); digits are
// followed by what followed the template's digits. Anything else in a
// literal's place (a backslash-escape string, a cast, a longer number)
// makes the text miss, and it takes the scan.
//
// The most recently admitted or hit shapes keep a template, at most
// maxTemplates of them; a text is tried against each, most recent first.

// maxTemplates bounds the literal templates kept: each miss tries them all.
const maxTemplates = 16

// literalTemplate is a shape's text cut at its masked literals.
type literalTemplate struct {
	cuts  []string // the text before, between and after the literals
	ints  []bool   // literal i is an integer
	entry *shapeEntry
}

// templates is a copy-on-write list of literal templates, most recent
// first.
type templates struct {
	mu   sync.Mutex // serializes add
	list atomic.Pointer[[]*literalTemplate]
	off  bool // keep none (benchmarks of the scan path)
}

// add makes a template of sql, a text of e's shape with the masked
// literals lits, unless e has one.
func (ts *templates) add(sql string, lits []literal, e *shapeEntry) {
	if ts.off || e.templated.Load() {
		return
	}
	t := &literalTemplate{cuts: make([]string, 0, len(lits)+1), ints: make([]bool, len(lits)), entry: e}
	last := 0
	for i, l := range lits {
		t.cuts = append(t.cuts, sql[last:l.start])
		t.ints[i] = l.integer
		last = l.end
	}
	t.cuts = append(t.cuts, sql[last:])
	for i, isInt := range t.ints {
		if isInt && !endsNumber(t.cuts[i+1]) {
			return // a number's end would depend on what follows it
		}
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if e.templated.Swap(true) {
		return
	}
	var old []*literalTemplate
	if p := ts.list.Load(); p != nil {
		old = *p
	}
	list := make([]*literalTemplate, 0, maxTemplates)
	list = append(list, t)
	for _, o := range old {
		if len(list) == maxTemplates {
			o.entry.templated.Store(false)
			continue
		}
		list = append(list, o)
	}
	ts.list.Store(&list)
}

// endsNumber reports whether text after an integer literal leaves it an
// integer whatever its digits: it starts with a delimiter, not with what
// could continue a number or an identifier.
func endsNumber(after string) bool {
	if after == "" {
		return false
	}
	switch after[0] {
	case ' ', '\t', '\n', '\r', '\f', ',', ')':
		return true
	}
	return false
}

// match returns the shape entry and the masked literals of sql, appended
// to dst, when it matches a template.
func (ts *templates) match(sql string, dst []literal) (*shapeEntry, []literal, bool) {
	p := ts.list.Load()
	if p == nil {
		return nil, nil, false
	}
	for _, t := range *p {
		if lits, ok := t.match(sql, dst[:0]); ok {
			return t.entry, lits, true
		}
	}
	return nil, nil, false
}

// match reports whether sql is t's cuts around literals of t's kinds, and
// returns the literals (appended to dst).
func (t *literalTemplate) match(sql string, dst []literal) ([]literal, bool) {
	if !strings.HasPrefix(sql, t.cuts[0]) {
		return nil, false
	}
	pos := len(t.cuts[0])
	for i, isInt := range t.ints {
		var n int
		var v string
		var ok bool
		if isInt {
			n, v, ok = intLiteral(sql[pos:])
		} else {
			n, v, ok = stringLiteral(sql[pos:])
		}
		if !ok {
			return nil, false
		}
		dst = append(dst, literal{start: pos, end: pos + n, value: v, integer: isInt})
		pos += n
		cut := t.cuts[i+1]
		if i+1 == len(t.ints) {
			if sql[pos:] != cut {
				return nil, false
			}
		} else if !strings.HasPrefix(sql[pos:], cut) {
			return nil, false
		}
		pos += len(cut)
	}
	return dst, true
}

// stringLiteral reads a '...' literal whose only quotes are doubled ones
// at the start of s, and returns its length and value.
func stringLiteral(s string) (n int, value string, ok bool) {
	if len(s) < 2 || s[0] != '\'' {
		return 0, "", false
	}
	for i := 1; i < len(s); i++ {
		if s[i] != '\'' {
			continue
		}
		if i+1 < len(s) && s[i+1] == '\'' {
			i++
			continue
		}
		v, ok := plainString(s[:i+1])
		return i + 1, v, ok
	}
	return 0, "", false
}

// intLiteral reads decimal digits at the start of s that fit in an int4
// (the scanner makes larger ones FCONST), and returns their length and
// value.
func intLiteral(s string) (n int, value string, ok bool) {
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	if n == 0 || n > 10 {
		return 0, "", false
	}
	v, ok := decimalInt(s[:n])
	return n, v, ok
}
