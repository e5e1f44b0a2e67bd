package backend

import (
	"encoding/json"
	"strconv"
	"strings"
)

// PushDoc is one tuple of a push-many data string.
type PushDoc struct {
	Subject  string
	Priority int32
	// Payload is the JSON text of the payload literal (not de-doubled: in
	// 4.0.2 the data string is parsed once, as SQL).
	Payload string
}

// ParsePushData parses the data argument of the push-many doc_push: a
// comma-separated list of tuples
//
//	(<subject literal>, <priority integer>, <payload literal>, {DATA})
//
// such as ('a1', 0, '{"a":1}', {DATA}), ('a2', 5, '{}', {DATA}), with any
// whitespace between tokens. Literals are standard SQL string literals ('
// inside is written twice); the priority is an integer with an optional
// sign. Anything else (other expressions, escape-string (E) literals, casts, a missing
// {DATA}, an empty list) fails with a 22P02 *Error. Subject length and
// payload JSON are checked when the documents are inserted.
func ParsePushData(data string) ([]PushDoc, error) {
	p := pushParser{s: data}
	var docs []PushDoc
	for {
		p.space()
		if !p.take('(') {
			return nil, p.fail("expected (")
		}
		var d PushDoc
		var ok bool
		p.space()
		if d.Subject, ok = p.literal(); !ok {
			return nil, p.fail("expected the subject as a string literal")
		}
		if !p.comma() {
			return nil, p.fail("expected ,")
		}
		if d.Priority, ok = p.integer(); !ok {
			return nil, p.fail("expected the priority as an integer")
		}
		if !p.comma() {
			return nil, p.fail("expected ,")
		}
		if d.Payload, ok = p.literal(); !ok {
			return nil, p.fail("expected the payload as a string literal")
		}
		if !p.comma() {
			return nil, p.fail("expected ,")
		}
		if !strings.HasPrefix(p.s[p.i:], "{DATA}") {
			return nil, p.fail("expected {DATA}")
		}
		p.i += len("{DATA}")
		p.space()
		if !p.take(')') {
			return nil, p.fail("expected )")
		}
		docs = append(docs, d)
		p.space()
		if p.i == len(p.s) {
			return docs, nil
		}
		if !p.take(',') {
			return nil, p.fail("expected , or the end")
		}
	}
}

// checkPushData validates the payloads of parsed tuples.
func checkPushData(docs []PushDoc) error {
	for i, d := range docs {
		if err := checkJSON(d.Payload); err != nil {
			e := err.(*Error)
			e.Detail = "tuple " + strconv.Itoa(i+1) + ": " + e.Detail
			return e
		}
	}
	return nil
}

// encodePushData encodes parsed tuples as a JSON array of {"s","p","d"}
// objects for jsonb_to_recordset: one parameter however many documents.
// The payload goes as the text of its JSON, which the statement casts:
// as a jsonb member of the list, a JSON null would come out of
// jsonb_to_recordset as SQL NULL instead of the jsonb null.
func encodePushData(docs []PushDoc) (string, error) {
	type row struct {
		S string `json:"s"`
		P int32  `json:"p"`
		D string `json:"d"`
	}
	rows := make([]row, len(docs))
	for i, d := range docs {
		rows[i] = row{S: d.Subject, P: d.Priority, D: d.Payload}
	}
	b, err := json.Marshal(rows)
	return string(b), err
}

type pushParser struct {
	s string
	i int
}

func (p *pushParser) fail(msg string) *Error {
	return &Error{
		Code:    codeInvalidText,
		Message: "invalid input syntax for push-many data: " + msg + " at position " + strconv.Itoa(p.i+1),
		Hint:    "Write the data as ('subject', priority, 'payload', {DATA}), ...",
		kind:    ErrInvalidArgument,
	}
}

// space skips SQL whitespace.
func (p *pushParser) space() {
	for p.i < len(p.s) && strings.IndexByte(" \t\n\r\f\v", p.s[p.i]) >= 0 {
		p.i++
	}
}

func (p *pushParser) take(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// comma consumes whitespace, a comma and whitespace.
func (p *pushParser) comma() bool {
	p.space()
	if !p.take(',') {
		return false
	}
	p.space()
	return true
}

// literal reads a standard SQL string literal.
func (p *pushParser) literal() (string, bool) {
	if !p.take('\'') {
		return "", false
	}
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		p.i++
		if c != '\'' {
			b.WriteByte(c)
			continue
		}
		if p.i < len(p.s) && p.s[p.i] == '\'' {
			b.WriteByte('\'')
			p.i++
			continue
		}
		return b.String(), true
	}
	return "", false // unterminated
}

// integer reads an optionally signed decimal int32.
func (p *pushParser) integer() (int32, bool) {
	start := p.i
	if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
		p.i++
	}
	digits := p.i
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	if p.i == digits {
		p.i = start
		return 0, false
	}
	n, err := strconv.ParseInt(p.s[start:p.i], 10, 32)
	if err != nil {
		p.i = start
		return 0, false
	}
	return int32(n), true
}
