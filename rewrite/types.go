package rewrite

// Type facts the overload resolver needs, as Postgres' pg_type and pg_cast
// hold them for the handful of types that can reach a Fetchq call. See
// https://www.postgresql.org/docs/current/typeconv-func.html.

// Types that never appear in a Fetchq signature but can be the type of an
// argument (a literal, a cast, a declared parameter).
const (
	typeInt2      Type = 21
	typeJSON      Type = 114
	typeFloat4    Type = 700
	typeFloat8    Type = 701
	typeUnknown   Type = 705
	typeDate      Type = 1082
	typeTimestamp Type = 1114
	typeInterval  Type = 1186
	typeNumeric   Type = 1700
)

// String returns the type's short SQL name, as used in Function.ID and in
// (*Call).SQL: "varchar", "integer", "timestamptz", ...
func (t Type) String() string {
	switch t {
	case TypeBool:
		return "boolean"
	case TypeInt8:
		return "bigint"
	case TypeInt4:
		return "integer"
	case TypeText:
		return "text"
	case TypeJSONB:
		return "jsonb"
	case TypeVarchar:
		return "varchar"
	case TypeTimestamptz:
		return "timestamptz"
	case TypeUUID:
		return "uuid"
	case TypeRecord:
		return "record"
	case TypeVoid:
		return "void"
	case typeInt2:
		return "smallint"
	case typeJSON:
		return "json"
	case typeFloat4:
		return "real"
	case typeFloat8:
		return "double precision"
	case typeUnknown:
		return "unknown"
	case typeDate:
		return "date"
	case typeTimestamp:
		return "timestamp"
	case typeInterval:
		return "interval"
	case typeNumeric:
		return "numeric"
	}
	return "oid " + itoa(int64(t))
}

// pgName is the type's name as Postgres' format_type_be prints it in error
// messages ("character varying", "timestamp with time zone").
func (t Type) pgName() string {
	switch t {
	case TypeVarchar:
		return "character varying"
	case TypeTimestamptz:
		return "timestamp with time zone"
	case typeTimestamp:
		return "timestamp without time zone"
	}
	return t.String()
}

// Type categories (pg_type.typcategory).
const (
	catBool     = 'B'
	catDatetime = 'D'
	catNumeric  = 'N'
	catString   = 'S'
	catTimespan = 'T'
	catUser     = 'U'
	catUnknown  = 'X'
)

// category returns pg_type.typcategory and typispreferred.
func (t Type) category() (cat byte, preferred bool) {
	switch t {
	case TypeBool:
		return catBool, true
	case typeInt2, TypeInt4, TypeInt8, typeNumeric, typeFloat4:
		return catNumeric, false
	case typeFloat8:
		return catNumeric, true
	case TypeText:
		return catString, true
	case TypeVarchar:
		return catString, false
	case typeDate, typeTimestamp:
		return catDatetime, false
	case TypeTimestamptz:
		return catDatetime, true
	case typeInterval:
		return catTimespan, true
	case typeUnknown:
		return catUnknown, false
	}
	return catUser, false
}

// implicitlyCoercible reports whether a value of type from can be passed
// where type to is declared without an explicit cast: the same type, an
// untyped literal or parameter, or an implicit pg_cast entry.
func implicitlyCoercible(from, to Type) bool {
	if from == to || from == typeUnknown {
		return true
	}
	switch from {
	case typeInt2:
		return to == TypeInt4 || to == TypeInt8 || to == typeNumeric || to == typeFloat4 || to == typeFloat8
	case TypeInt4:
		return to == TypeInt8 || to == typeNumeric || to == typeFloat4 || to == typeFloat8
	case TypeInt8:
		return to == typeNumeric || to == typeFloat4 || to == typeFloat8
	case typeNumeric:
		return to == typeFloat4 || to == typeFloat8
	case typeFloat4:
		return to == typeFloat8
	case TypeText:
		return to == TypeVarchar
	case TypeVarchar:
		return to == TypeText
	case typeDate:
		return to == typeTimestamp || to == TypeTimestamptz
	case typeTimestamp:
		return to == TypeTimestamptz
	}
	return false
}

// typeByName maps the names a TypeName node can carry (after an optional
// pg_catalog qualifier) to the types the rewriter supports in casts.
var typeByName = map[string]Type{
	"bool":        TypeBool,
	"boolean":     TypeBool,
	"int2":        typeInt2,
	"smallint":    typeInt2,
	"int4":        TypeInt4,
	"int":         TypeInt4,
	"integer":     TypeInt4,
	"int8":        TypeInt8,
	"bigint":      TypeInt8,
	"numeric":     typeNumeric,
	"decimal":     typeNumeric,
	"float4":      typeFloat4,
	"real":        typeFloat4,
	"float8":      typeFloat8,
	"text":        TypeText,
	"varchar":     TypeVarchar,
	"json":        typeJSON,
	"jsonb":       TypeJSONB,
	"uuid":        TypeUUID,
	"date":        typeDate,
	"timestamp":   typeTimestamp,
	"timestamptz": TypeTimestamptz,
	"interval":    typeInterval,
}

// itoa formats an int64 without fmt (used on hot-ish paths and in String).
func itoa(n int64) string {
	var b [24]byte
	i := len(b)
	neg := n < 0
	u := uint64(n)
	if neg {
		u = uint64(-n)
	}
	for {
		i--
		b[i] = byte('0' + u%10)
		u /= 10
		if u == 0 {
			break
		}
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}
