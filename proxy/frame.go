package proxy

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// Wire framing.
//
// Every message after the startup packet is a type byte followed by a
// big-endian int32 length that counts itself but not the type byte
// (https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS).
// The proxy forwards most messages without decoding them: it reads the
// 5-byte header, then copies the body from one buffered connection to the
// other. Only the few messages whose contents the proxy needs (ReadyForQuery,
// ParameterStatus, BackendKeyData, the authentication requests) are read into
// memory. A body larger than the read buffer is streamed, so a 10 MB bytea
// never sits in the proxy whole.

const (
	// headerLen is the size of a message header: type byte + int32 length.
	headerLen = 5

	// bufSize is the size of each buffered reader and writer. Postgres
	// itself sends in 8 KB chunks.
	bufSize = 8192

	// maxMessageLen bounds the body of any message in either direction.
	// Postgres refuses messages over 1 GB (PQ_LARGE_MESSAGE_LIMIT); a
	// length above it is a protocol violation, not an allocation request.
	maxMessageLen = 0x3fffffff

	// maxInspectLen bounds messages the proxy reads into memory to inspect
	// during startup and authentication.
	maxInspectLen = 1 << 16
)

// protocolError reports a malformed message. It closes only the connection
// it came from.
type protocolError struct {
	msg string
}

func (e *protocolError) Error() string { return e.msg }

// SQLState implements the interface proxy/errors.go translates.
func (e *protocolError) SQLState() string { return "08P01" }

// msgReader reads framed messages from a buffered connection. It is not safe
// for concurrent use.
type msgReader struct {
	r *bufio.Reader

	// Idle release (buffers.go): conn is the connection r reads, nil
	// until releaseWhenIdle.
	conn net.Conn
	src  wakeReader
	wake [16]byte
}

// header reads the next message header and returns its type and body
// length. It consumes the header only.
func (m *msgReader) header() (typ byte, n int, err error) {
	if m.conn != nil && m.buffered() == 0 {
		if err := m.waitIdle(); err != nil {
			return 0, 0, err
		}
	}
	h, err := m.r.Peek(headerLen)
	if err != nil {
		if len(h) > 0 && err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, err
	}
	typ, n, ok := parseHeader(h)
	if !ok {
		l := int32(binary.BigEndian.Uint32(h[1:headerLen]))
		return typ, 0, &protocolError{msg: fmt.Sprintf("invalid message length %d for message type %q", l, typ)}
	}
	_, _ = m.r.Discard(headerLen)
	return typ, n, nil
}

// parseHeader decodes a message header (at least headerLen bytes): its
// type and body length, ok false when the length field is out of range.
func parseHeader(h []byte) (typ byte, n int, ok bool) {
	l := int64(int32(binary.BigEndian.Uint32(h[1:headerLen])))
	if l < 4 || l-4 > maxMessageLen {
		return h[0], 0, false
	}
	return h[0], int(l - 4), true
}

// body reads a whole body of n bytes into buf (reusing its capacity) and
// returns it. Memory grows with the bytes actually received, not with the
// length a header claims: a client announcing a 1 GB message and sending
// nothing costs at most growStep.
func (m *msgReader) body(buf []byte, n int) ([]byte, error) {
	buf = buf[:0]
	for have := 0; have < n; {
		want := min(n, have+growStep)
		if cap(buf) < want {
			buf = append(buf[:cap(buf)], make([]byte, want-cap(buf))...)
		}
		k, err := io.ReadFull(m.r, buf[have:want])
		have += k
		buf = buf[:have]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return buf, err
		}
	}
	return buf, nil
}

// growStep bounds how far a message buffer grows ahead of the data.
const growStep = 1 << 20

// next reads one whole message of at most limit bytes.
func (m *msgReader) next(buf []byte, limit int) (typ byte, body []byte, err error) {
	typ, n, err := m.header()
	if err != nil {
		return typ, nil, err
	}
	if n > limit {
		return typ, nil, &protocolError{msg: fmt.Sprintf("message of type %q is too long (%d bytes)", typ, n)}
	}
	body, err = m.body(buf, n)
	return typ, body, err
}

// copyBody forwards a body of n bytes to w without holding it in memory.
func (m *msgReader) copyBody(w *connWriter, n int) error {
	for n > 0 {
		chunk := n
		if b := m.r.Buffered(); b > 0 && b < chunk {
			chunk = b
		} else if b == 0 && chunk > m.r.Size() {
			chunk = m.r.Size()
		}
		p, err := m.r.Peek(chunk)
		if len(p) > 0 {
			if _, werr := w.Write(p); werr != nil {
				return werr
			}
			_, _ = m.r.Discard(len(p))
			n -= len(p)
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// writeHeader appends a message header to w.
func writeHeader(w *connWriter, typ byte, n int) error {
	var h [headerLen]byte
	h[0] = typ
	binary.BigEndian.PutUint32(h[1:], uint32(n+4))
	_, err := w.Write(h[:])
	return err
}

// writeMsg writes a whole message.
func writeMsg(w *connWriter, typ byte, body []byte) error {
	if err := writeHeader(w, typ, len(body)); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

// encoder is implemented by every pgproto3 message.
type encoder interface {
	Encode(dst []byte) ([]byte, error)
}

// writeEncoded encodes a pgproto3 message into w.
func writeEncoded(w *connWriter, msg encoder) error {
	b, err := msg.Encode(nil)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// syncNext reports whether the next message, already buffered, is a Sync
// (without a body). It never waits for input.
func (m *msgReader) syncNext() bool {
	if m.buffered() < headerLen {
		return false
	}
	h, err := m.r.Peek(headerLen)
	return err == nil && h[0] == 'S' && binary.BigEndian.Uint32(h[1:5]) == 4
}
