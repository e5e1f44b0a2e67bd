package proxy

import (
	"strconv"
	"testing"

	"github.com/fetchq/fetchq-proxy/rewrite"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"
)

// TestRowDescEncode: the RowDescription of a call's columns, encoded
// straight from them, is byte for byte pgproto3's, in every format mix,
// after bytes already in the buffer, and decodes back to the columns.
func TestRowDescEncode(t *testing.T) {
	cols := []rewrite.OutputColumn{
		{Name: "subject", TypeOID: oidVarchar},
		{Name: "version", TypeOID: oidInt4},
		{Name: "payload", TypeOID: oidJSONB},
		{Name: "created_at", TypeOID: oidTimestamptz},
		{Name: "doc_pick", TypeOID: oidRecord, Source: -1, Composite: true},
		{Name: "é", TypeOID: oidInt8},
	}
	for _, formats := range [][]int16{nil, {0}, {1}, {1, 0, 1, 0, 1, 0}, {1, 1}} {
		fields := make([]pgproto3.FieldDescription, len(cols))
		for i, c := range cols {
			fields[i] = pgproto3.FieldDescription{Name: []byte(c.Name), DataTypeOID: c.TypeOID,
				DataTypeSize: typeSize(c.TypeOID), TypeModifier: -1, Format: formatOf(formats, i)}
		}
		want, err := (&pgproto3.RowDescription{Fields: fields}).Encode([]byte("prefix"))
		require.NoError(t, err)
		got, err := rowDesc{cols, formats}.Encode([]byte("prefix"))
		require.NoError(t, err)
		require.Equal(t, want, got, "formats %v", formats)

		var back pgproto3.RowDescription
		require.NoError(t, back.Decode(got[len("prefix")+5:]))
		require.Equal(t, fields, back.Fields)
	}
	empty, err := rowDesc{}.Encode(nil)
	require.NoError(t, err)
	want, err := (&pgproto3.RowDescription{}).Encode(nil)
	require.NoError(t, err)
	require.Equal(t, want, empty)
}

// TestDataRowAndCompleteEncode: a call's DataRow (with NULLs and empty
// values) and its CommandComplete are byte for byte pgproto3's.
func TestDataRowAndCompleteEncode(t *testing.T) {
	for _, vals := range [][][]byte{nil, {nil}, {[]byte("")}, {[]byte("a"), nil, []byte("{\"x\": 1}"), []byte("")}} {
		want, err := (&pgproto3.DataRow{Values: vals}).Encode([]byte("x"))
		require.NoError(t, err)
		require.Equal(t, want, appendDataRowMsg([]byte("x"), vals), "values %q", vals)
	}
	for _, n := range []int{0, 1, 100, 12345678} {
		want, err := (&pgproto3.CommandComplete{CommandTag: []byte("SELECT " + strconv.Itoa(n))}).Encode([]byte("x"))
		require.NoError(t, err)
		require.Equal(t, want, appendSelectComplete([]byte("x"), n))
	}
}
