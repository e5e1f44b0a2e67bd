package proxy

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unique"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Startup and authentication
// (https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP).
//
// The proxy reads the client's startup packet itself, answering SSLRequest
// (with TLS when configured, else 'N'), GSSENCRequest ('N') and routing a
// CancelRequest. It then opens the session's upstream connection with the
// client's own parameters at protocol 3.0, and relays the authentication
// exchange message by message: Postgres decides who may log in, and the
// client's role is the one that acts. The proxy never sees a password in
// clear (md5 and SCRAM hash or prove it on the client) and never logs one.
// It removes SCRAM-SHA-256-PLUS from the offered mechanisms, because the
// client's TLS session ends at the proxy and channel binding would bind the
// wrong one.

const (
	// maxStartupPacketLen is Postgres' MAX_STARTUP_PACKET_LENGTH.
	maxStartupPacketLen = 10000

	authOK           = 0
	authCleartext    = 3
	authMD5          = 5
	authSASL         = 10
	authSASLContinue = 11
	authSASLFinal    = 12
)

// errCancelHandled ends a connection that only carried a CancelRequest.
var errCancelHandled = errors.New("cancel request handled")

var noDeadline time.Time

// readStartupPacket reads one length-prefixed startup packet directly from
// the connection, without read-ahead, so that bytes a client sends after an
// SSLRequest are never buffered in plaintext and then mistaken for TLS data.
func readStartupPacket(conn io.Reader) (code uint32, body []byte, err error) {
	var h [4]byte
	if _, err := io.ReadFull(conn, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(h[:]))
	if n < 8 || n > maxStartupPacketLen {
		return 0, nil, &protocolError{msg: "invalid length of startup packet"}
	}
	buf := make([]byte, n-4)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return 0, nil, &protocolError{msg: "incomplete startup packet"}
	}
	return binary.BigEndian.Uint32(buf[:4]), buf[4:], nil
}

// parseStartupParams decodes the NUL-separated name/value list of a
// StartupMessage.
func parseStartupParams(b []byte) (map[string]string, []string, error) {
	params := make(map[string]string)
	var order []string
	for {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			return nil, nil, &protocolError{msg: "invalid startup packet layout: expected terminator as last byte"}
		}
		if i == 0 {
			if len(b) != 1 {
				return nil, nil, &protocolError{msg: "invalid startup packet layout: expected terminator as last byte"}
			}
			return params, order, nil
		}
		name := string(b[:i])
		b = b[i+1:]
		j := bytes.IndexByte(b, 0)
		if j < 0 {
			return nil, nil, &protocolError{msg: "invalid startup packet layout: expected terminator as last byte"}
		}
		if _, dup := params[name]; !dup {
			order = append(order, name)
		}
		params[name] = string(b[:j])
		b = b[j+1:]
	}
}

// startup runs the handshake up to the first ReadyForQuery. On success the
// session has its upstream connection and the client has seen
// AuthenticationOk, the ParameterStatus messages, the proxy's
// BackendKeyData and ReadyForQuery.
func (s *session) startup() error {
	cfg := s.srv.cfg
	_ = s.conn.SetDeadline(time.Now().Add(cfg.StartupTimeout))

	var (
		params  map[string]string
		order   []string
		unknown []string // _pq_ options the proxy does not support
		minor   uint32
	)
	tlsDone, gssDone := false, false
	for params == nil {
		code, body, err := readStartupPacket(s.conn)
		if err != nil {
			return err
		}
		switch {
		case code == sslRequestCode && !tlsDone:
			tlsDone = true
			if cfg.TLSConfig == nil {
				if _, err := s.conn.Write([]byte{'N'}); err != nil {
					return err
				}
				continue
			}
			if hasPendingInput(s.conn) {
				// Bytes sent with the SSLRequest, before the TLS
				// handshake, could only have been injected in plaintext
				// (CVE-2021-23214): refuse them, as Postgres does.
				s.initClientIO()
				return s.fail(&protocolError{msg: "received unencrypted data after SSL request"})
			}
			if _, err := s.conn.Write([]byte{'S'}); err != nil {
				return err
			}
			tc := tls.Server(s.conn, cfg.TLSConfig)
			if err := tc.Handshake(); err != nil {
				return fmt.Errorf("tls handshake: %w", err)
			}
			s.conn = tc
		case code == gssEncRequestCode && !gssDone:
			gssDone = true
			if _, err := s.conn.Write([]byte{'N'}); err != nil {
				return err
			}
		case code == cancelRequestCode:
			s.srv.handleCancel(body)
			return errCancelHandled
		case code>>16 == 3:
			minor = code & 0xffff
			params, order, err = parseStartupParams(body)
			if err != nil {
				s.initClientIO()
				return s.fail(err)
			}
		default:
			s.initClientIO()
			return s.fail(&Error{Code: "0A000", Message: fmt.Sprintf(
				"unsupported frontend protocol %d.%d: server supports 3.0 to 3.0", code>>16, code&0xffff)})
		}
	}
	s.initClientIO()

	if max := cfg.MaxClients; max > 0 && s.srv.active.Load() > int64(max) {
		return s.fail(&Error{Code: "53300", Message: "sorry, too many clients already"})
	}

	// Options in the _pq_ namespace are protocol extensions; the proxy
	// supports none and, like Postgres, lists them in
	// NegotiateProtocolVersion rather than failing.
	startupParams := make(map[string]string, len(params))
	for _, k := range order {
		if strings.HasPrefix(k, "_pq_.") {
			unknown = append(unknown, k)
			continue
		}
		startupParams[k] = params[k]
	}
	s.user, s.database = params["user"], params["database"]
	s.lg.Store(nil) // a logger made earlier lacks them
	ctx, cancel := context.WithDeadline(s.ctx, time.Now().Add(cfg.StartupTimeout))
	defer cancel()
	up, err := dialUpstream(ctx, cfg.Upstream)
	if err != nil {
		s.log().Warn("upstream connection failed", "err", err)
		return s.fail(err)
	}
	s.setUpstream(up)
	if d, ok := ctx.Deadline(); ok {
		_ = up.conn.SetDeadline(d)
	}
	if err := writeEncoded(up.w, &pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: startupParams,
	}); err != nil {
		return err
	}
	if err := up.w.Flush(); err != nil {
		return err
	}
	if minor > 0 || len(unknown) > 0 {
		if err := writeEncoded(s.cw, &pgproto3.NegotiateProtocolVersion{
			NewestMinorProtocol: 0, UnrecognizedOptions: unknown,
		}); err != nil {
			return err
		}
	}
	if err := s.relayAuth(); err != nil {
		return err
	}
	// Fetchq is served in Config.Database only; Postgres connects a
	// startup packet without a database to the user's namesake. Logged
	// once per server, after authentication.
	if database := cmp.Or(s.database, s.user); cfg.Database != "" && database != cfg.Database && s.intercepting {
		s.intercepting = false
		if s.srv.otherDBLogged.CompareAndSwap(false, true) {
			s.log().Info("a client of another database than the service pool's: its Fetchq calls are passed through to Postgres (logged once)",
				"served", cfg.Database)
		}
	}
	_ = s.conn.SetDeadline(noDeadline)
	_ = up.conn.SetDeadline(noDeadline)
	s.cr.releaseWhenIdle(s.conn)
	up.r.releaseWhenIdle(up.conn)
	return nil
}

// initClientIO sets up buffered client I/O once the connection (plain or
// TLS) is final.
func (s *session) initClientIO() {
	s.cr = newMsgReader(s.conn)
	s.cw = newConnWriter(s.conn)
}

// relayAuth relays the authentication exchange and the messages up to the
// first ReadyForQuery.
func (s *session) relayAuth() error {
	up := s.up
	var buf []byte
	for {
		typ, body, err := up.r.next(buf, maxInspectLen)
		if err != nil {
			return fmt.Errorf("reading upstream during startup: %w", err)
		}
		buf = body
		switch typ {
		case 'R':
			if len(body) < 4 {
				return &protocolError{msg: "short authentication request from upstream"}
			}
			code := binary.BigEndian.Uint32(body)
			switch code {
			case authOK, authSASLFinal:
				if err := writeMsg(s.cw, typ, body); err != nil {
					return err
				}
			case authCleartext, authMD5, authSASLContinue:
				if err := s.authRoundTrip(typ, body); err != nil {
					return err
				}
			case authSASL:
				body = withoutChannelBinding(body)
				if len(body) <= 5 {
					return s.fail(&Error{Code: "28000", Message: "the upstream offers only SCRAM with channel binding, which cannot pass through a proxy"})
				}
				if err := s.authRoundTrip(typ, body); err != nil {
					return err
				}
			default:
				return s.fail(&Error{Code: "28000", Message: fmt.Sprintf(
					"authentication method %d requested by the upstream is not supported by fetchq-proxy", code)})
			}
		case 'K':
			if len(body) < 8 {
				return &protocolError{msg: "short BackendKeyData from upstream"}
			}
			s.upMu.Lock()
			s.upKey.pid = binary.BigEndian.Uint32(body)
			s.upKey.secret = append([]byte(nil), body[4:]...)
			s.upMu.Unlock()
			pid, secret := s.srv.cancels.register(s)
			var k [8]byte
			binary.BigEndian.PutUint32(k[:4], pid)
			copy(k[4:], secret[:])
			if err := writeMsg(s.cw, 'K', k[:]); err != nil {
				return err
			}
		case 'S':
			s.recordParameter(body)
			if err := writeMsg(s.cw, typ, body); err != nil {
				return err
			}
		case 'Z':
			if len(body) != 1 {
				return &protocolError{msg: "bad ReadyForQuery from upstream"}
			}
			s.txStatus.Store(uint32(body[0]))
			if err := writeMsg(s.cw, typ, body); err != nil {
				return err
			}
			return s.cw.Flush()
		case 'E':
			// Authentication failed or the upstream refused the session
			// (28P01, 3D000, 53300, ...): pass Postgres' own error on.
			if err := writeMsg(s.cw, typ, body); err != nil {
				return err
			}
			_ = s.cw.Flush()
			return errAuthFailed
		case 'N', 'v':
			if err := writeMsg(s.cw, typ, body); err != nil {
				return err
			}
		default:
			return &protocolError{msg: fmt.Sprintf("unexpected message %q from upstream during startup", typ)}
		}
	}
}

// errAuthFailed ends a session whose upstream refused it; the client has
// already received the upstream's ErrorResponse.
var errAuthFailed = errors.New("upstream refused the session")

// authRoundTrip forwards an authentication request to the client and the
// client's answer (a PasswordMessage, SASLInitialResponse or SASLResponse,
// all type 'p') back to the upstream. The answer is forwarded opaque.
func (s *session) authRoundTrip(typ byte, body []byte) error {
	if err := writeMsg(s.cw, typ, body); err != nil {
		return err
	}
	if err := s.cw.Flush(); err != nil {
		return err
	}
	ctyp, n, err := s.cr.header()
	if err != nil {
		return err
	}
	if ctyp != 'p' || n > maxInspectLen {
		return s.fail(&protocolError{msg: fmt.Sprintf("expected password response, got message type %q", ctyp)})
	}
	if err := writeHeader(s.up.w, ctyp, n); err != nil {
		return err
	}
	if err := s.cr.copyBody(s.up.w, n); err != nil {
		return err
	}
	return s.up.w.Flush()
}

// withoutChannelBinding removes SCRAM-SHA-256-PLUS from an
// AuthenticationSASL body (int32 code, then NUL-terminated mechanism names,
// then a final NUL).
func withoutChannelBinding(body []byte) []byte {
	out := append([]byte(nil), body[:4]...)
	for _, m := range bytes.Split(body[4:], []byte{0}) {
		if len(m) == 0 || string(m) == "SCRAM-SHA-256-PLUS" {
			continue
		}
		out = append(append(out, m...), 0)
	}
	return append(out, 0)
}

// recordParameter stores a ParameterStatus body (name NUL value NUL).
func (s *session) recordParameter(body []byte) {
	i := bytes.IndexByte(body, 0)
	if i < 0 {
		return
	}
	name := string(body[:i])
	val := body[i+1:]
	if j := bytes.IndexByte(val, 0); j >= 0 {
		val = val[:j]
	}
	s.pmu.Lock()
	defer s.pmu.Unlock()
	// Names and most values are the same in every session: interned,
	// they are stored once.
	p := paramStatus{name: unique.Make(name), value: unique.Make(string(val))}
	for i := range s.params {
		if s.params[i].name == p.name {
			s.params[i].value = p.value
			return
		}
	}
	s.params = append(s.params, p)
}

// paramStatus is one ParameterStatus value.
type paramStatus struct {
	name, value unique.Handle[string]
}
