package backend

import (
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// TimeKind says how a [Time] argument is given.
type TimeKind uint8

const (
	// TimeNull is SQL NULL (the zero Time).
	TimeNull TimeKind = iota
	// TimeLiteral is timestamptz input text, e.g. '2030-01-01 00:00'.
	TimeLiteral
	// TimeNow is now(), optionally plus or minus an interval.
	TimeNow
	// TimeEpoch is to_timestamp(seconds since the Unix epoch).
	TimeEpoch
)

// Time is a timestamptz argument as the proxy received it. It is not
// evaluated in Go: each operation evaluates it inside its own SQL statement,
// so now() is the transaction timestamp of that statement's transaction,
// exactly as when the extension receives NOW() + INTERVAL '1h' as an
// argument. Literal text is interpreted with the session's TimeZone and
// DateStyle.
//
// The zero Time is NULL. Build others with [Now], [NowPlus], [NowMinus],
// [TimeAt] and [TimeEpochSeconds].
type Time struct {
	Kind TimeKind
	// Text is the timestamptz input text (TimeLiteral) or the number of
	// seconds as a decimal string (TimeEpoch).
	Text string
	// Interval is the interval input text added to now() (TimeNow); "" for
	// none.
	Interval string
	// Negative subtracts Interval instead of adding it.
	Negative bool
}

// Now is now(), the transaction timestamp.
func Now() Time { return Time{Kind: TimeNow} }

// NowPlus is now() + interval, e.g. NowPlus("1 hour").
func NowPlus(interval string) Time { return Time{Kind: TimeNow, Interval: interval} }

// NowMinus is now() - interval.
func NowMinus(interval string) Time {
	return Time{Kind: TimeNow, Interval: interval, Negative: true}
}

// TimeAt is the timestamptz literal text, e.g. TimeAt("2030-01-01 00:00").
func TimeAt(text string) Time { return Time{Kind: TimeLiteral, Text: text} }

// TimeEpochSeconds is to_timestamp(seconds), seconds being a decimal string
// such as "1700000000.123".
func TimeEpochSeconds(seconds string) Time { return Time{Kind: TimeEpoch, Text: seconds} }

// IsNull reports whether t is SQL NULL.
func (t Time) IsNull() bool { return t.Kind == TimeNull }

// sql returns the SQL expression of t (of type timestamptz), adding its
// values to a. The fragments are constants: values only travel as
// parameters.
func (t Time) sql(a *args) string {
	switch t.Kind {
	case TimeLiteral:
		return a.add(t.Text) + "::timestamptz"
	case TimeNow:
		if t.Interval == "" {
			return "now()"
		}
		if t.Negative {
			return "(now() - " + a.add(t.Interval) + "::interval)"
		}
		return "(now() + " + a.add(t.Interval) + "::interval)"
	case TimeEpoch:
		return "to_timestamp(" + a.add(t.Text) + "::float8)"
	default:
		return "NULL::timestamptz"
	}
}

// isTimeArgError reports whether err is Postgres rejecting the text of one
// of the Time arguments ts: bad timestamp, interval or number text, or a
// value out of range. In the extension such text fails while the call's
// arguments are coerced, before the function body (and its exception
// handler) runs, so even catch-all functions raise it. Only meaningful for
// statements whose other values cannot raise these codes.
func isTimeArgError(err error, ts ...Time) bool {
	var pg *pgconn.PgError
	if !errors.As(err, &pg) {
		return false
	}
	hasText := false
	for _, t := range ts {
		if t.Kind == TimeLiteral || t.Kind == TimeEpoch || (t.Kind == TimeNow && t.Interval != "") {
			hasText = true
		}
	}
	if !hasText {
		return false
	}
	switch pg.Code {
	case codeInvalidDatetimeFmt, codeDatetimeOverflow, codeInvalidTZDisplace,
		codeInvalidParameterVal, codeInvalidText, codeInvalidIntervalField, codeOutOfRange:
		return true
	}
	return false
}

// Timestamp is a timestamptz value as Postgres printed it in text format
// (so in the session's DateStyle and TimeZone).
type Timestamp struct {
	// Text is the printed value, e.g. "2024-05-01 12:00:00.123456+00".
	Text string
	// Valid is false for SQL NULL.
	Valid bool
}

// timestamp converts a text-format value.
func timestamp(v []byte) Timestamp {
	if v == nil {
		return Timestamp{}
	}
	return Timestamp{Text: string(v), Valid: true}
}

// Time parses t in Postgres' ISO output format (DateStyle ISO, the
// default). It fails for NULL, infinity and other DateStyles.
func (t Timestamp) Time() (time.Time, error) {
	if !t.Valid {
		return time.Time{}, errors.New("backend: NULL timestamp")
	}
	s := t.Text
	// The offset is +hh, +hh:mm or +hh:mm:ss; make it +hh:mm:ss.
	i := strings.LastIndexAny(s, "+-")
	if i < len("2006-01-02 15:04:05") {
		return time.Time{}, errors.New("backend: cannot parse timestamp " + s)
	}
	off := s[i:]
	switch len(off) {
	case 3:
		off += ":00:00"
	case 6:
		off += ":00"
	}
	return time.Parse("2006-01-02 15:04:05.999999999-07:00:00", s[:i]+off)
}
