package proxy

import "time"

// SetIdleRelease sets how long readers wait before giving their buffer
// back and returns a function restoring the previous value. Not safe
// while sessions run: call it from a test that is not parallel.
func SetIdleRelease(d time.Duration) (restore func()) {
	old := idleRelease
	idleRelease = d
	return func() { idleRelease = old }
}

// IdleReaders returns how many readers wait without a buffer.
func IdleReaders() int64 { return idleReaders.Load() }
