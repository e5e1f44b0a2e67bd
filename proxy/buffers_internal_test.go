package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// failingWriter fails every write after the first n bytes.
type failingWriter struct {
	bytes.Buffer
	n int
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.Len()+len(p) > f.n {
		return 0, errors.New("broken")
	}
	return f.Buffer.Write(p)
}

func TestConnWriter(t *testing.T) {
	var out bytes.Buffer
	w := newConnWriter(&out)
	var want bytes.Buffer
	for _, size := range []int{1, 5, bufSize - 6, 3, bufSize, 2*bufSize + 7, 0, 100} {
		p := bytes.Repeat([]byte{byte(size)}, size)
		n, err := w.Write(p)
		require.NoError(t, err)
		require.Equal(t, size, n)
		want.Write(p)
	}
	require.NotNil(t, w.buf)
	require.NoError(t, w.Flush())
	require.Nil(t, w.buf, "a flush that empties the writer gives its buffer back")
	require.Equal(t, want.Bytes(), out.Bytes())
	require.NoError(t, w.Flush())

	// A direct write of a whole buffer while empty takes no buffer.
	_, err := w.Write(make([]byte, bufSize))
	require.NoError(t, err)
	require.Nil(t, w.buf)

	// Errors are sticky.
	fw := &failingWriter{n: 10}
	w = newConnWriter(fw)
	_, err = w.Write(make([]byte, 20))
	require.NoError(t, err)
	require.Error(t, w.Flush())
	_, err = w.Write([]byte{1})
	require.Error(t, err)
	require.Error(t, w.Flush())
}

// TestReaderIdleRelease: a reader gives its buffer back after idleRelease
// and reads every byte that arrives afterwards, including a header split
// over several writes.
func TestReaderIdleRelease(t *testing.T) {
	defer SetIdleRelease(20 * time.Millisecond)()
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	m := newMsgReader(server)
	m.releaseWhenIdle(server)

	msgs := [][]byte{
		{'Q', 0, 0, 0, 8, 'a', 'b', 'c', 0},
		{'S', 0, 0, 0, 4},
		append([]byte{'d', 0, 0, 0x40, 4}, bytes.Repeat([]byte{7}, 0x4000)...),
	}
	observed := make(chan int64, len(msgs))
	go func() {
		for _, msg := range msgs {
			time.Sleep(60 * time.Millisecond) // idle: the reader lets its buffer go
			observed <- idleReaders.Load()
			for _, part := range [][]byte{msg[:1], msg[1:3], msg[3:]} {
				if _, err := client.Write(part); err != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}
	}()
	next := func() (byte, []byte, error) {
		for {
			typ, body, err := m.next(nil, 1<<20)
			if !errors.Is(err, errIdle) {
				return typ, body, err
			}
			// Idle: the buffer went back; wait without one.
			require.Nil(t, m.r)
			if err := m.waitWake(); err != nil {
				return 0, nil, err
			}
		}
	}
	for _, msg := range msgs {
		typ, body, err := next()
		require.NoError(t, err)
		require.Equal(t, msg[0], typ)
		require.Equal(t, string(msg[5:]), string(body))
	}
	for range msgs {
		require.EqualValues(t, 1, <-observed, "the idle reader had given its buffer back")
	}
	require.Zero(t, idleReaders.Load())
	_ = client.Close()
	_, _, err := next()
	require.ErrorIs(t, err, io.EOF)
}
