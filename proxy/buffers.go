package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// I/O buffers.
//
// A proxy holds many more connections than it has busy ones, so an idle
// session holds no I/O buffer. Readers and writers take their 8 KB buffers
// from shared pools while messages flow and give them back when the
// connection goes quiet:
//
//   - a writer after every flush that empties it (a flush happens each time
//     a direction has forwarded everything its source sent);
//   - a reader once its connection has sent nothing for idleRelease. Until
//     then a blocking read keeps its buffer, so a session in a steady
//     exchange never goes back to the pool; past it, the read is redone
//     into a few bytes of the reader's own and the buffer comes back with
//     the next message.
//
// The idle wait also runs on a fresh goroutine: a goroutine's stack grows
// with the deepest work it ever did and the runtime shrinks it only when
// it is mostly unused, which a reader blocked under its loop never is. An
// idle session then costs two small stacks and its connections.

// idleRelease is how long a reader waits for a message before it gives
// its buffer back. A variable so tests can shorten it.
var idleRelease = time.Second

// idleReaders counts readers waiting without a buffer.
var idleReaders atomic.Int64

var (
	writeBufPool  = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}
	bufReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufSize) }}
)

// connWriter is a buffered writer whose buffer is taken from a pool on the
// first write and given back by the Flush that empties it. Like
// bufio.Writer, a write error is sticky. It is not safe for concurrent
// use.
type connWriter struct {
	w   io.Writer
	buf *[]byte // nil while empty
	n   int
	err error
}

func newConnWriter(w io.Writer) *connWriter { return &connWriter{w: w} }

// Write buffers p, writing the buffer out whenever it fills. A write of a
// buffer's size or more while nothing is buffered goes out directly.
func (cw *connWriter) Write(p []byte) (int, error) {
	if cw.err != nil {
		return 0, cw.err
	}
	written := 0
	for len(p) > 0 {
		if cw.buf == nil {
			if len(p) >= bufSize {
				n, err := cw.w.Write(p)
				written += n
				if err == nil && n < len(p) {
					err = io.ErrShortWrite
				}
				cw.err = err
				return written, err
			}
			cw.buf = writeBufPool.Get().(*[]byte)
		}
		k := copy((*cw.buf)[cw.n:], p)
		cw.n += k
		written += k
		p = p[k:]
		if cw.n == len(*cw.buf) {
			if err := cw.writeOut(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// writeOut writes the buffered bytes and keeps the (empty) buffer.
func (cw *connWriter) writeOut() error {
	n, err := cw.w.Write((*cw.buf)[:cw.n])
	if err == nil && n < cw.n {
		err = io.ErrShortWrite
	}
	if err != nil {
		cw.err = err
		return err
	}
	cw.n = 0
	return nil
}

// Flush writes out what is buffered and gives the buffer back.
func (cw *connWriter) Flush() error {
	if cw.err != nil {
		return cw.err
	}
	if cw.buf == nil {
		return nil
	}
	if cw.n > 0 {
		if err := cw.writeOut(); err != nil {
			return err
		}
	}
	writeBufPool.Put(cw.buf)
	cw.buf = nil
	return nil
}

// Buffered returns the number of bytes written but not flushed.
func (cw *connWriter) Buffered() int { return cw.n }

// newMsgReader returns a reader of conn's messages. It gives its buffer
// back while conn is idle once releaseWhenIdle is called (after startup,
// whose reads run under a deadline of their own).
func newMsgReader(conn net.Conn) msgReader {
	r := bufReaderPool.Get().(*bufio.Reader)
	r.Reset(conn)
	return msgReader{r: r}
}

// releaseWhenIdle lets the reader give its buffer back while conn, the
// connection it reads, is idle, and gives it back now if nothing is
// buffered: a session just started holds no buffer until its client
// speaks. The caller must not set read deadlines on conn afterwards.
func (m *msgReader) releaseWhenIdle(conn net.Conn) {
	m.conn = conn
	if m.r.Buffered() == 0 {
		m.putBuffer()
	}
}

// buffered returns how many bytes the reader holds.
func (m *msgReader) buffered() int {
	if m.r == nil {
		return 0
	}
	return m.r.Buffered()
}

func (m *msgReader) putBuffer() {
	m.r.Reset(nil)
	bufReaderPool.Put(m.r)
	m.r = nil
}

// wakeReader reads the bytes a reader received while idle, then its
// connection.
type wakeReader struct {
	prefix []byte
	conn   net.Conn
}

func (w *wakeReader) Read(p []byte) (int, error) {
	if len(w.prefix) > 0 {
		n := copy(p, w.prefix)
		w.prefix = w.prefix[n:]
		return n, nil
	}
	return w.conn.Read(p)
}

// waitIdle waits for the next message when nothing is buffered, with the
// buffer for up to idleRelease; then it gives the buffer back and returns
// errIdle (see I/O buffers).
func (m *msgReader) waitIdle() error {
	if m.r != nil {
		if err := m.conn.SetReadDeadline(time.Now().Add(idleRelease)); err != nil {
			return nil // the connection cannot time out: just read
		}
		_, err := m.r.Peek(1)
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || m.r.Buffered() > 0 {
			// Data (or another error, which the caller's read reports
			// again) came first.
			_ = m.conn.SetReadDeadline(time.Time{})
			return nil
		}
		if err := m.conn.SetReadDeadline(time.Time{}); err != nil {
			return err
		}
		m.putBuffer()
	}
	return errIdle
}

// errIdle reports that a reader gave its buffer back because its
// connection is idle. The caller waits for the connection with waitWake,
// on a fresh goroutine: the runtime never shrinks a stack that is more
// than a quarter used, so a goroutine that once ran deep keeps its stack
// for good, while a new one starts small (see I/O buffers).
var errIdle = errors.New("proxy: connection idle")

// waitWake waits, holding no buffer, for the connection's next bytes, then
// takes a buffer again.
func (m *msgReader) waitWake() error {
	idleReaders.Add(1)
	n, rerr := m.conn.Read(m.wake[:])
	idleReaders.Add(-1)
	m.src = wakeReader{prefix: m.wake[:n], conn: m.conn}
	m.r = bufReaderPool.Get().(*bufio.Reader)
	m.r.Reset(&m.src)
	if n == 0 && rerr != nil {
		return rerr
	}
	return nil
}

// detach gives the reader's buffer back and returns a copy of the bytes it
// held: the relay loop reads the connection from now on (relay_linux.go).
func (m *msgReader) detach() []byte {
	if m.r == nil {
		return nil
	}
	var held []byte
	if n := m.r.Buffered(); n > 0 {
		p, _ := m.r.Peek(n)
		held = append([]byte(nil), p...)
	}
	m.putBuffer()
	return held
}

// resume makes the reader read prefix first, then its connection: the
// relay loop hands a connection back with the bytes it read but did not
// use. releaseWhenIdle must have been called.
func (m *msgReader) resume(prefix []byte) {
	m.src = wakeReader{prefix: prefix, conn: m.conn}
	m.r = bufReaderPool.Get().(*bufio.Reader)
	m.r.Reset(&m.src)
}
