package backend

import (
	"cmp"
	"context"
	"log/slog"
)

// DefaultVersion is the Fetchq version fetchq.info() reports unless
// Config.Version says otherwise: the one the npm client fetchq@4.2.0
// requires.
const DefaultVersion = "4.0.2"

// Config configures a [Store].
type Config struct {
	// Logger receives a Debug line for each error a catch-all function
	// turns into its failure value (0, NULL, false, an empty set), which the
	// client never sees, and a Warn line when init() fails. Nil discards.
	Logger *slog.Logger

	// Version is what fetchq.info() reports. Clients compare it with the
	// version they were built for (fetchq@4.2.0 wants "4.0.2", the 4.1.1
	// repository HEAD wants "4.0.0"; spec §4.4). Default DefaultVersion.
	Version string
}

// Store runs the Fetchq operations. Its methods take the [DB] to run on, so
// one Store serves the service pool and clients' own connections alike. A
// Store holds no mutable state and is safe for concurrent use.
type Store struct {
	logger  *slog.Logger
	version string
}

// New returns a Store configured by cfg, with defaults for zero fields.
func New(cfg Config) *Store {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Store{
		logger:  logger,
		version: cmp.Or(cfg.Version, DefaultVersion),
	}
}

// swallow reports whether fn's catch-all handler absorbs err (see caught),
// logging it at Debug if so.
func (s *Store) swallow(ctx context.Context, fn string, err error) bool {
	if !caught(err) {
		return false
	}
	s.logger.DebugContext(ctx, "fetchq function failed; returning its failure value", "function", fn, "error", err)
	return true
}
