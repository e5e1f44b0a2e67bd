package proxy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fetchq/fetchq-proxy/internal/pgtest"
	"github.com/fetchq/fetchq-proxy/proxy"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"
)

// TestPasswordAuth: md5 and SCRAM-SHA-256 users authenticate through the
// proxy with the right password; a wrong one gets Postgres' own 28P01.
func TestPasswordAuth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct{ user, password string }{
		{md5User, md5Password},
		{scramUser, scramPasswd},
	} {
		t.Run(tc.user, func(t *testing.T) {
			ctx := ctxT(t, 30*time.Second)
			conn, err := pgconn.Connect(ctx, b.proxyDSN(tc.user, tc.password))
			require.NoError(t, err)
			res, err := conn.Exec(ctx, "SELECT current_user").ReadAll()
			require.NoError(t, err)
			require.Equal(t, tc.user, string(res[0].Rows[0][0]))
			require.NoError(t, conn.Close(ctx))

			var directErr, proxyErr *pgconn.PgError
			_, err = pgconn.Connect(ctx, b.directDSN(tc.user, "wrong"))
			require.ErrorAs(t, err, &directErr)
			_, err = pgconn.Connect(ctx, b.proxyDSN(tc.user, "wrong"))
			require.ErrorAs(t, err, &proxyErr)
			require.Equal(t, "28P01", proxyErr.Code)
			require.Equal(t, `password authentication failed for user "`+tc.user+`"`, proxyErr.Message)
			require.Equal(t, directErr.Code, proxyErr.Code)
			require.Equal(t, directErr.Message, proxyErr.Message)
			require.Equal(t, directErr.Severity, proxyErr.Severity)
			require.NotContains(t, err.Error(), "wrong")
		})
	}
}

// TestUnknownDatabase: Postgres' own 3D000 reaches the client.
func TestUnknownDatabase(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg, err := pgconn.ParseConfig(b.proxyDSN("", ""))
	require.NoError(t, err)
	cfg.Database = "no_such_db"
	_, err = pgconn.ConnectConfig(ctxT(t, 30*time.Second), cfg)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "3D000", pgErr.Code)
	require.Equal(t, `database "no_such_db" does not exist`, pgErr.Message)
}

// selfSignedCert makes a throw-away certificate for 127.0.0.1.
func selfSignedCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "fetchq-proxy test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestTLS: with a certificate configured, sslmode=require connects over
// TLS, and SCRAM still works over it (channel binding is not offered).
func TestTLS(t *testing.T) {
	t.Parallel()
	cert := selfSignedCert(t)
	b := setup(t, func(c *proxy.Config, _ *pgtest.DB) {
		c.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	})
	for _, tc := range []struct{ user, password string }{{"", ""}, {scramUser, scramPasswd}, {md5User, md5Password}} {
		dsn := "host=127.0.0.1 port=" + itoa(b.port) +
			" dbname=" + b.db.Name + " sslmode=require"
		if tc.user != "" {
			dsn += " user=" + tc.user + " password=" + quoteDSNValue(tc.password)
		} else {
			dsn += " user=postgres"
		}
		ctx := ctxT(t, 30*time.Second)
		conn, err := pgconn.Connect(ctx, dsn)
		require.NoError(t, err)
		_, isTLS := conn.Conn().(*tls.Conn)
		require.True(t, isTLS, "connection is not TLS")
		res, err := conn.Exec(ctx, "SELECT 'over tls'").ReadAll()
		require.NoError(t, err)
		require.Equal(t, "over tls", string(res[0].Rows[0][0]))
		conn.Close(context.Background())
	}
}

// TestTLSRequiredWithoutCert: without a certificate the proxy answers
// SSLRequest with 'N', so sslmode=require fails cleanly.
func TestTLSRequiredWithoutCert(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := pgconn.Connect(ctxT(t, 30*time.Second),
		"host=127.0.0.1 port="+itoa(b.port)+" user=postgres dbname="+b.db.Name+" sslmode=require")
	require.Error(t, err)
	require.Contains(t, err.Error(), "server refused TLS connection")
}

// TestPlaintextAfterSSLRequestRefused: bytes sent in the same write as an
// SSLRequest are never taken into the TLS session; the connection is
// refused with 08P01 as Postgres does.
func TestPlaintextAfterSSLRequestRefused(t *testing.T) {
	t.Parallel()
	cert := selfSignedCert(t)
	b := setup(t, func(c *proxy.Config, _ *pgtest.DB) {
		c.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	})
	conn, err := net.Dial("tcp", net.JoinHostPort(b.host, itoa(b.port)))
	require.NoError(t, err)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), 80877103)
	req = append(req, startupPacket(3<<16, "user", "postgres", "database", b.db.Name)...)
	_, err = conn.Write(req)
	require.NoError(t, err)
	msg, err := pgproto3.NewFrontend(conn, conn).Receive()
	require.NoError(t, err)
	er, ok := msg.(*pgproto3.ErrorResponse)
	require.True(t, ok, "got %T", msg)
	require.Equal(t, "08P01", er.Code)
	require.Equal(t, "received unencrypted data after SSL request", er.Message)
}

// TestIdleReleaseOverTLS: a TLS session whose readers gave their buffers
// back (idle past the release delay, here shortened) and whose readers
// time out mid-wait keeps working: read timeouts do not break the TLS
// state, and messages arriving in pieces after an idle spell are read
// whole. Not parallel: it shortens the package's idle delay.
func TestIdleReleaseOverTLS(t *testing.T) {
	t.Cleanup(proxy.SetIdleRelease(30 * time.Millisecond)) // runs last, after the server stops
	cert := selfSignedCert(t)
	b := setup(t, func(c *proxy.Config, _ *pgtest.DB) {
		c.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	})
	ctx := ctxT(t, 30*time.Second)
	conn, err := pgconn.Connect(ctx, "host=127.0.0.1 port="+itoa(b.port)+" dbname="+b.db.Name+" user=postgres sslmode=require")
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, isTLS := conn.Conn().(*tls.Conn)
	require.True(t, isTLS)
	for i := range 5 {
		time.Sleep(100 * time.Millisecond) // idle: both readers let their buffers go
		// A result slower than the delay: the upstream reader times out
		// with its buffer, gives it back and waits without one.
		res, err := conn.Exec(ctx, "SELECT pg_sleep(0.1), repeat('x', 20000) || "+itoa(i)).ReadAll()
		require.NoError(t, err)
		require.Equal(t, strings.Repeat("x", 20000)+itoa(i), string(res[0].Rows[0][1]))
	}
}
