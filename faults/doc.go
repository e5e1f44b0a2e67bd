// Package faults holds fault-injection tests of fetchq-proxy: the proxy runs
// as a separate process (the fetchq-proxy binary, built once per test run)
// in front of a real Postgres, workers pick and complete documents through
// it, and the tests break things while they work:
//
//   - TestKillProxyRepeatedly: kill -9 the proxy several times during a run
//     and restart it; workers reconnect.
//   - TestPostgresRestart: stop and start a dedicated Postgres during a run
//     (a fast shutdown and a crash); the proxy reconnects by itself.
//   - TestThreeProxies: three proxies on one database, workers spread over
//     them, the maintenance leader killed once; one leader at a time.
//   - TestAbandonedPick: a worker that picks and dies; the document comes
//     back after its lock and is killed at max_attempts.
//   - TestSigtermUnderLoad: graceful shutdown while clients work; in-flight
//     calls complete and no client sees half a message.
//
// Every run checks the promises of a queue: every document pushed ends up
// completed (counted in Postgres directly, not through the proxy), and no
// two picks of a document overlap within a lock. Picks are judged with the
// database clock: each pick returns its lock end (next_iteration = now() +
// lock), so the lock start is known exactly, and a document is never picked
// again after the transaction that completed it (its last_iteration).
// Delivery is at least once: a document whose holder vanished (its proxy
// killed, its answer lost) is picked again once its lock has expired.
//
// The short versions run in `go test ./...`; `go test ./faults -full` runs
// the full sizes (100,000 documents with repeated kill -9, 200,000 documents
// over three proxies).
//
// The package has no non-test code but this comment.
package faults
