//go:build !linux

package proxy

import (
	"errors"
	"log/slog"
)

// The relay loop needs epoll: elsewhere every session runs on its own
// goroutines (see relay_linux.go).

type relayLoop struct{}

type relaySession struct{ loop *relayLoop }

func newRelayLoop(*slog.Logger) (*relayLoop, error) {
	return nil, errors.New("the relay loop needs Linux")
}

func (l *relayLoop) enter(*session) bool             { return false }
func (l *relayLoop) post(func()) bool                { return false }
func (l *relayLoop) owns(*relaySession) bool         { return false }
func (l *relayLoop) handBack(*relaySession)          {}
func (l *relayLoop) close()                          {}
func (l *relayLoop) stats() (sessions, handed int64) { return 0, 0 }
