package proxy

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/fetchq/fetchq-proxy/rewrite"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Result and parameter encoding for intercepted calls
// (https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-FORMAT-CODES).
// The backend returns every value in text format, as Postgres printed it
// for the client's session; a client that asks for binary gets the value
// converted for the few types Fetchq functions return.

// Type OIDs the proxy converts.
const (
	oidBool        = 16
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidJSON        = 114
	oidFloat8      = 701
	oidUnknown     = 705
	oidBPChar      = 1042
	oidVarchar     = 1043
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidUUID        = 2950
	oidJSONB       = 3802
	oidRecord      = 2249
)

// formatOf returns the format code of column or parameter i: none means
// all text, one means all the same, else one per item.
func formatOf(formats []int16, i int) int16 {
	switch len(formats) {
	case 0:
		return 0
	case 1:
		return formats[0]
	}
	if i < len(formats) {
		return formats[i]
	}
	return 0
}

func paramType(types []uint32, i int) uint32 {
	if i < len(types) {
		return types[i]
	}
	return 0
}

// typeSize is the typlen Postgres reports in RowDescription.
func typeSize(oid uint32) int16 {
	switch oid {
	case oidBool:
		return 1
	case oidInt2:
		return 2
	case oidInt4:
		return 4
	case oidInt8, oidTimestamptz, oidTimestamp, oidFloat8:
		return 8
	case oidUUID:
		return 16
	}
	return -1
}

// rowDescription describes call's result columns.
func rowDescription(call *rewrite.Call, formats []int16) encoder {
	if len(call.Columns) == 0 {
		return &pgproto3.NoData{}
	}
	return rowDesc{call.Columns, formats}
}

// rowDesc is the RowDescription of a call's result columns in formats,
// encoded straight from them (a call's answer carries one; a
// pgproto3.RowDescription would take a slice and a copy of every name).
type rowDesc struct {
	columns []rewrite.OutputColumn
	formats []int16
}

// Encode appends the message to dst as pgproto3's RowDescription would.
func (r rowDesc) Encode(dst []byte) ([]byte, error) {
	if len(r.columns) > math.MaxUint16 {
		return nil, fmt.Errorf("too many columns: %d", len(r.columns))
	}
	start := len(dst)
	dst = append(dst, 'T', 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(r.columns)))
	for i, c := range r.columns {
		dst = append(dst, c.Name...)
		dst = append(dst, 0)
		dst = binary.BigEndian.AppendUint32(dst, 0) // table OID
		dst = binary.BigEndian.AppendUint16(dst, 0) // column number
		dst = binary.BigEndian.AppendUint32(dst, c.TypeOID)
		dst = binary.BigEndian.AppendUint16(dst, uint16(typeSize(c.TypeOID)))
		dst = binary.BigEndian.AppendUint32(dst, math.MaxUint32) // type modifier -1
		dst = binary.BigEndian.AppendUint16(dst, uint16(formatOf(r.formats, i)))
	}
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst, nil
}

// appendDataRowMsg appends a DataRow of vals (nil is NULL) to dst, as
// pgproto3 encodes it, without boxing a message.
func appendDataRowMsg(dst []byte, vals [][]byte) []byte {
	start := len(dst)
	dst = append(dst, 'D', 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(vals)))
	for _, v := range vals {
		if v == nil {
			dst = binary.BigEndian.AppendUint32(dst, math.MaxUint32) // -1: NULL
			continue
		}
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
		dst = append(dst, v...)
	}
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

// appendSelectComplete appends the CommandComplete "SELECT n" of a call
// that returned n rows, as pgproto3 encodes it.
func appendSelectComplete(dst []byte, n int) []byte {
	start := len(dst)
	dst = append(dst, 'C', 0, 0, 0, 0)
	dst = append(dst, "SELECT "...)
	dst = strconv.AppendInt(dst, int64(n), 10)
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

// projectRow picks and encodes, into vals (one per column), the columns
// the statement returns from one row of the function's output.
func projectRow(vals [][]byte, call *rewrite.Call, row [][]byte, formats []int16) ([][]byte, error) {
	for i, c := range call.Columns {
		var v []byte
		switch {
		case c.Source >= 0 && c.Source < len(row):
			v = row[c.Source]
		case c.Composite:
			if formatOf(formats, i) == 1 {
				b, err := recordBinary(call.Func.Out, row)
				if err != nil {
					return nil, err
				}
				vals[i] = b
				continue
			}
			v = recordText(row)
		case len(row) > 0:
			v = row[0]
		}
		if v == nil {
			continue
		}
		if formatOf(formats, i) == 1 {
			b, err := binaryValue(c.TypeOID, v)
			if err != nil {
				return nil, err
			}
			v = b
		}
		vals[i] = v
	}
	return vals, nil
}

// recordText renders a row as a record literal, as Postgres prints a
// composite value: (a,b) with NULL empty and values quoted when needed.
func recordText(row [][]byte) []byte {
	var b strings.Builder
	b.WriteByte('(')
	for i, v := range row {
		if i > 0 {
			b.WriteByte(',')
		}
		if v == nil {
			continue
		}
		s := string(v)
		if s == "" || strings.ContainsAny(s, "(),\"\\ \t\n\r") {
			b.WriteByte('"')
			for _, r := range s {
				if r == '"' || r == '\\' {
					b.WriteRune(r)
				}
				b.WriteRune(r)
			}
			b.WriteByte('"')
		} else {
			b.WriteString(s)
		}
	}
	b.WriteByte(')')
	return []byte(b.String())
}

// recordBinary encodes a row as a record in binary format: the column
// count, then each column's type OID, length and binary value.
func recordBinary(cols []rewrite.Column, row [][]byte) ([]byte, error) {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(row)))
	for i, v := range row {
		oid := uint32(cols[i].Type)
		b = binary.BigEndian.AppendUint32(b, oid)
		if v == nil {
			b = binary.BigEndian.AppendUint32(b, 0xFFFFFFFF)
			continue
		}
		bv, err := binaryValue(oid, v)
		if err != nil {
			return nil, err
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(bv)))
		b = append(b, bv...)
	}
	return b, nil
}

// pgEpochUnix is 2000-01-01 00:00:00 UTC, Postgres' timestamp epoch, in Unix seconds.
const pgEpochUnix = 946684800

// binaryValue converts a text-format value of type oid to binary format.
func binaryValue(oid uint32, text []byte) ([]byte, error) {
	s := string(text)
	switch oid {
	case oidBool:
		if s == "t" {
			return []byte{1}, nil
		}
		return []byte{0}, nil
	case oidInt2, oidInt4, oidInt8:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, err
		}
		switch oid {
		case oidInt2:
			return binary.BigEndian.AppendUint16(nil, uint16(n)), nil
		case oidInt4:
			return binary.BigEndian.AppendUint32(nil, uint32(n)), nil
		}
		return binary.BigEndian.AppendUint64(nil, uint64(n)), nil
	case oidText, oidVarchar, oidBPChar, oidJSON, oidUnknown:
		return text, nil
	case oidJSONB:
		return append([]byte{1}, text...), nil
	case oidUUID:
		b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
		if err != nil || len(b) != 16 {
			return nil, fmt.Errorf("invalid uuid %q", s)
		}
		return b, nil
	case oidTimestamptz:
		switch s {
		case "infinity":
			return binary.BigEndian.AppendUint64(nil, math.MaxInt64), nil
		case "-infinity":
			return binary.BigEndian.AppendUint64(nil, uint64(1)<<63), nil
		}
		t, err := parseTimestamptz(s)
		if err != nil {
			return nil, err
		}
		us := (t.Unix()-pgEpochUnix)*1_000_000 + int64(t.Nanosecond()/1000)
		return binary.BigEndian.AppendUint64(nil, uint64(us)), nil
	}
	return nil, &Error{Code: "0A000", Message: fmt.Sprintf("binary format for type %d is not supported by fetchq-proxy; request text format", oid)}
}

// parseTimestamptz reads timestamptz text in the ISO DateStyle.
func parseTimestamptz(s string) (time.Time, error) {
	bc := strings.HasSuffix(s, " BC")
	s = strings.TrimSuffix(s, " BC")
	// Postgres prints offsets as +HH, +HH:MM or +HH:MM:SS.
	for _, layout := range []string{
		"2006-01-02 15:04:05.999999999Z07", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07:00:00",
	} {
		if t, err := time.Parse(layout, s); err == nil {
			if bc {
				t = t.AddDate(-2*t.Year()+1, 0, 0)
			}
			return t, nil
		}
	}
	return time.Time{}, &Error{Code: "0A000", Message: "binary timestamptz results need DateStyle ISO; request text format or SET DateStyle = ISO"}
}

// bindParam converts parameter n (1-based) of a Bind, of type oid, to the
// text the backend takes, and refuses what Postgres refuses at Bind for
// the same value: in text format, what the UTF8 encoding check refuses;
// in binary format, a value shorter than the type's receive function
// reads (08P01), longer (22P03 "incorrect binary data format"), or out of
// the type's range; any other format code (22023).
func bindParam(v []byte, format int16, oid uint32, n int) (string, error) {
	switch format {
	case 0:
		if err := checkText(v); err != nil {
			return "", err
		}
		return string(v), nil
	case 1:
	default:
		return "", &Error{Code: "22023", Message: fmt.Sprintf("unsupported format code: %d", format)}
	}
	// size checks the length of a fixed-size binary value.
	size := func(want int) error {
		switch {
		case len(v) < want:
			return errMsgShort
		case len(v) > want:
			return &Error{Code: "22P03", Message: fmt.Sprintf("incorrect binary data format in bind parameter %d", n)}
		}
		return nil
	}
	switch oid {
	case oidBool:
		if len(v) == 0 {
			return "", errMsgNoData
		}
		if err := size(1); err != nil {
			return "", err
		}
		if v[0] != 0 {
			return "true", nil
		}
		return "false", nil
	case oidInt2:
		if err := size(2); err != nil {
			return "", err
		}
		return strconv.Itoa(int(int16(binary.BigEndian.Uint16(v)))), nil
	case oidInt4:
		if err := size(4); err != nil {
			return "", err
		}
		return strconv.Itoa(int(int32(binary.BigEndian.Uint32(v)))), nil
	case oidInt8:
		if err := size(8); err != nil {
			return "", err
		}
		return strconv.FormatInt(int64(binary.BigEndian.Uint64(v)), 10), nil
	case oidText, oidVarchar, oidBPChar, oidJSON, oidUnknown, 0:
		if err := checkText(v); err != nil {
			return "", err
		}
		return string(v), nil
	case oidJSONB:
		if len(v) == 0 {
			return "", errMsgShort
		}
		if v[0] != 1 {
			// jsonb_recv's own error, an elog without a SQLSTATE.
			return "", &Error{Code: "XX000", Message: fmt.Sprintf("unsupported jsonb version number %d", v[0])}
		}
		if err := checkText(v[1:]); err != nil {
			return "", err
		}
		return string(v[1:]), nil
	case oidTimestamptz, oidTimestamp:
		if len(v) < 8 {
			return "", errMsgShort
		}
		us := int64(binary.BigEndian.Uint64(v))
		text, err := timestampText(us, oid == oidTimestamptz)
		if err != nil {
			return "", err
		}
		if err := size(8); err != nil {
			return "", err
		}
		return text, nil
	}
	return "", &Error{Code: "0A000", Message: fmt.Sprintf("binary format for parameters of type %d is not supported by fetchq-proxy; send text", oid)}
}

// Postgres' timestamp range in microseconds since 2000-01-01:
// MIN_TIMESTAMP (4714-11-24 BC) and END_TIMESTAMP (294277-01-01).
const (
	minTimestampUS = -211813488000000000
	endTimestampUS = 9223371331200000000
)

// timestampText renders a binary timestamp (microseconds since
// 2000-01-01, UTC for timestamptz) as text Postgres reads back exactly.
func timestampText(us int64, tz bool) (string, error) {
	switch {
	case us == math.MaxInt64:
		return "infinity", nil
	case us == math.MinInt64:
		return "-infinity", nil
	case us < minTimestampUS || us >= endTimestampUS:
		return "", &Error{Code: "22008", Message: "timestamp out of range"}
	}
	t := time.Unix(pgEpochUnix+us/1_000_000, (us%1_000_000)*1000).UTC()
	year := t.Year()
	bc := year <= 0
	if bc {
		year = 1 - year // Go's year 0 is 1 BC
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%04d-%02d-%02d %02d:%02d:%02d", year, t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second())
	if frac := t.Nanosecond() / 1000; frac != 0 {
		b.WriteString(strings.TrimRight(fmt.Sprintf(".%06d", frac), "0"))
	}
	if tz {
		b.WriteString("+00")
	}
	if bc {
		b.WriteString(" BC")
	}
	return b.String(), nil
}
