// Package proxy serves Postgres clients over the frontend/backend protocol
// (https://www.postgresql.org/docs/current/protocol.html) and relays them to
// an upstream Postgres.
//
// # Layers
//
// A Server owns listeners and sessions (server.go, shaped like net/http's
// Server). A session owns one client connection and its upstream connection
// (session.go). Startup, TLS and the authentication relay are in startup.go;
// cancellation in cancel.go; the upstream dialer in upstream.go; framing in
// frame.go; the decoding of the client messages the proxy reads itself in
// message.go; the translation of Go errors into ErrorResponse messages in
// errors.go, the only place where that happens. Fetchq calls are
// intercepted in intercept.go (run on the client's connection, internal.go,
// or batched across sessions by the Batcher); a client's pipelined calls
// are started without waiting for one another in pipelined.go; the order
// of answers is kept by the response queue (respqueue.go).
//
// # Session lifecycle
//
//  1. Accept. The startup packet is read without read-ahead. SSLRequest is
//     answered 'S' (then TLS) when a certificate is configured, else 'N';
//     GSSENCRequest 'N'. A CancelRequest is routed and the connection closed.
//     A client asking for protocol 3.x with x > 0, or for _pq_ options, gets
//     NegotiateProtocolVersion and continues at 3.0.
//  2. The upstream connection is opened with the client's own startup
//     parameters (user, database, application_name, options, ...), so
//     settings take effect exactly as on a direct connection.
//  3. Authentication is relayed message by message (trust, cleartext, md5,
//     SCRAM-SHA-256). SCRAM-SHA-256-PLUS is removed from the offered
//     mechanisms: the client's TLS session ends at the proxy, so channel
//     binding cannot hold end to end. Postgres' own errors (28P01, 3D000...)
//     reach the client unchanged.
//  4. ParameterStatus messages are relayed and remembered; BackendKeyData is
//     replaced by a key of the proxy's own (see Cancellation).
//  5. Relay: the session goroutine forwards client messages upstream; a
//     second goroutine forwards upstream messages to the client. Both track
//     only what they must from the upstream's own messages, never from SQL
//     text: the transaction status of each ReadyForQuery, ParameterStatus
//     values, and the number of requests in flight.
//
// # The relay loop
//
// On Linux a session whose two connections are plain sockets starts in the
// relay loop instead (relay_linux.go): one goroutine and one epoll set for
// all such sessions, which reads what a socket holds, forwards the whole
// messages among it and keeps the same bookkeeping as the goroutines, with
// no read that finds nothing and no goroutine to wake per message. The
// first client message it does not forward itself (a Fetchq call, a
// Terminate, anything malformed or too long to inspect), the end of a
// connection, a close or a shutdown's terminate hands the session back to
// its two goroutines, with the bytes read but not used, for good.
//
// # Simple and extended query
//
// Both pass through unchanged, including multi-statement Query messages,
// named and unnamed statements and portals, Describe, Flush, and pipelines
// of several Syncs: the proxy forwards messages in order and never inserts
// or drops one, so the upstream's "after an error, discard until Sync" rule
// yields exactly one ErrorResponse and one ReadyForQuery per failed
// pipeline segment, as on a direct connection.
//
// # Buffering
//
// Reads and writes are buffered. Each direction flushes when it has
// forwarded everything its source has sent so far, i.e. just before it
// would block waiting for more: in practice after ReadyForQuery, after the
// answer to a Flush, at COPY boundaries, and for asynchronous messages
// (NOTIFY, notices). Never per message, and never holding output while
// waiting for input. Message bodies larger than the buffer are streamed,
// so memory per session stays bounded whatever the result size, and a
// client that stops reading stops the upstream through TCP backpressure.
// Buffers come from shared pools: a writer gives its buffer back with
// every flush that empties it, a reader once its connection has been idle
// for a second (buffers.go), so an idle session holds no I/O buffer; each
// loop then waits on a fresh goroutine, whose stack starts small, and the
// session ends in endSession, whichever goroutine runs it then.
//
// # Cancellation
//
// Each session gets its own random BackendKeyData. A CancelRequest carrying
// it is matched (secret compared in constant time) and re-sent to the
// upstream with the upstream backend's real key. Wrong keys are ignored.
//
// # Shutdown
//
// Shutdown stops accepting, then closes each session once it is idle (no
// request in flight, transaction status 'I'), sending FATAL 57P01 first as
// Postgres does. Sessions still busy when the context ends are closed.
// Close is immediate.
//
// # Debugging
//
// Run with --log-level debug to log session starts and ends. To see every
// message, point a pgproto3.Frontend with Trace enabled at the proxy.
package proxy
