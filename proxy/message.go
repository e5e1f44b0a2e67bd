package proxy

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Decoding of the client messages the proxy reads itself.
//
// Postgres reads message fields with the pq_getmsg* functions of
// pqformat.c, and a field that is missing, too short or unterminated, or
// bytes left after the last field, raise ERROR 08P01: the framing is
// intact, so the session goes on after the next Sync. msgBody reads fields
// the same way and fails with the same errors.
//
// Where Postgres would refuse a message before using anything only the
// proxy knows (an intercepted statement or portal), the proxy forwards it
// as it is and lets Postgres answer; only Bind, whose parameters Postgres
// reads after looking the statement up, is refused by the proxy itself.

var (
	// errMsgShort is pq_getmsgint's and pq_getmsgbytes' error.
	errMsgShort = &Error{Code: "08P01", Message: "insufficient data left in message"}
	// errMsgString is pq_getmsgstring's error for a missing terminator.
	errMsgString = &Error{Code: "08P01", Message: "invalid string in message"}
	// errMsgNoData is pq_getmsgbyte's error.
	errMsgNoData = &Error{Code: "08P01", Message: "no data left in message"}
	// errMsgFormat is pq_getmsgend's error for bytes after the last field.
	errMsgFormat = &Error{Code: "08P01", Message: "invalid message format"}
)

// msgBody reads the fields of a message body in order. The first error
// sticks: later reads return zero values, and err reports it.
type msgBody struct {
	b   []byte
	err error
}

func (m *msgBody) fail(err error) {
	if m.err == nil {
		m.err = err
	}
	m.b = nil
}

// byte1 reads one byte (pq_getmsgbyte).
func (m *msgBody) byte1() byte {
	if m.err != nil {
		return 0
	}
	if len(m.b) < 1 {
		m.fail(errMsgNoData)
		return 0
	}
	c := m.b[0]
	m.b = m.b[1:]
	return c
}

// uint16 reads a 16-bit count (pq_getmsgint(msg, 2): unsigned).
func (m *msgBody) uint16() int {
	if m.err != nil {
		return 0
	}
	if len(m.b) < 2 {
		m.fail(errMsgShort)
		return 0
	}
	v := binary.BigEndian.Uint16(m.b)
	m.b = m.b[2:]
	return int(v)
}

// int16 reads a 16-bit format code.
func (m *msgBody) int16() int16 { return int16(m.uint16()) }

// int16s reads a count and that many format codes. A count larger than
// the body could hold reads what there is and then fails as Postgres'
// reads would, without allocating for the claimed count.
func (m *msgBody) int16s() []int16 {
	n := m.uint16()
	if n > len(m.b)/2 {
		n = len(m.b)/2 + 1
	}
	out := make([]int16, n)
	for i := range out {
		out[i] = m.int16()
	}
	return out
}

// int32 reads a 32-bit integer (pq_getmsgint(msg, 4)).
func (m *msgBody) int32() int32 {
	if m.err != nil {
		return 0
	}
	if len(m.b) < 4 {
		m.fail(errMsgShort)
		return 0
	}
	v := binary.BigEndian.Uint32(m.b)
	m.b = m.b[4:]
	return int32(v)
}

// bytes reads n bytes (pq_getmsgbytes); a negative n is an error too.
func (m *msgBody) bytes(n int32) []byte {
	if m.err != nil {
		return nil
	}
	if n < 0 || int(n) > len(m.b) {
		m.fail(errMsgShort)
		return nil
	}
	v := m.b[:n:n]
	m.b = m.b[n:]
	return v
}

// str reads a NUL-terminated string (pq_getmsgstring), which must be
// valid in the client encoding, as Postgres checks when it converts it.
func (m *msgBody) str() string {
	if m.err != nil {
		return ""
	}
	for i, c := range m.b {
		if c == 0 {
			if err := checkText(m.b[:i]); err != nil {
				m.fail(err)
				return ""
			}
			s := string(m.b[:i])
			m.b = m.b[i+1:]
			return s
		}
	}
	m.fail(errMsgString)
	return ""
}

// end requires that no bytes are left (pq_getmsgend).
func (m *msgBody) end() {
	if m.err == nil && len(m.b) > 0 {
		m.fail(errMsgFormat)
	}
}

// checkText refuses what Postgres refuses in text that must be valid
// UTF-8 (a bound text value, a string field of a message): a NUL byte or
// an invalid byte sequence, reported as Postgres' report_invalid_encoding
// does (22021).
func checkText(v []byte) error {
	for i := 0; i < len(v); {
		c := v[i]
		if c != 0 && c < utf8.RuneSelf {
			i++
			continue
		}
		if c != 0 {
			if r, size := utf8.DecodeRune(v[i:]); r != utf8.RuneError || size > 1 {
				i += size
				continue
			}
		}
		return invalidEncoding(v[i:])
	}
	return nil
}

// invalidEncoding reports the invalid sequence at the start of v: as many
// bytes as its first byte announces, at most what is left and at most 8.
func invalidEncoding(v []byte) error {
	n := 1
	switch c := v[0]; {
	case c&0xe0 == 0xc0:
		n = 2
	case c&0xf0 == 0xe0:
		n = 3
	case c&0xf8 == 0xf0:
		n = 4
	}
	n = min(n, len(v), 8)
	var b strings.Builder
	for i, c := range v[:n] {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "0x%02x", c)
	}
	return &Error{Code: "22021", Message: `invalid byte sequence for encoding "UTF8": ` + b.String()}
}
