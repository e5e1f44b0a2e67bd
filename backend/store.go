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

	// Metrics holds the counter deltas of committed operations not yet in
	// fetchq.metrics: the one the proxy applies Result.Effects to and the
	// Maintainer flushes. The metric_* read functions add (or first flush)
	// its pending deltas, so they are exact for the work committed through
	// this process. Default: a private NewMetrics(), which only sees the
	// effects its owner applies to Store.Metrics().
	Metrics *Metrics
}

// Store runs the Fetchq operations. Its methods take the [DB] to run on, so
// one Store serves the service pool and clients' own connections alike. A
// Store is safe for concurrent use; its only mutable state is its
// [Metrics], which is.
type Store struct {
	logger  *slog.Logger
	version string
	metrics *Metrics
}

// New returns a Store configured by cfg, with defaults for zero fields.
func New(cfg Config) *Store {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	metrics := cfg.Metrics
	if metrics == nil {
		metrics = NewMetrics()
	}
	return &Store{
		logger:  logger,
		version: cmp.Or(cfg.Version, DefaultVersion),
		metrics: metrics,
	}
}

// Metrics returns the Metrics the Store reads pending counter deltas from
// (Config.Metrics or its private one). Apply the Effects of committed
// operations to it.
func (s *Store) Metrics() *Metrics { return s.metrics }

// swallow reports whether fn's catch-all handler absorbs err (see caught),
// logging it at Debug if so.
func (s *Store) swallow(ctx context.Context, fn string, err error) bool {
	if !caught(err) {
		return false
	}
	s.logger.DebugContext(ctx, "fetchq function failed; returning its failure value", "function", fn, "error", err)
	return true
}
