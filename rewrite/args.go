package rewrite

import (
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"

	pg_query "github.com/pganalyze/pg_query_go/v5"
)

// value is an evaluated call argument: the Arg the Plan will carry and the
// type Postgres would give the expression before overload resolution.
type value struct {
	arg Arg
	typ Type
	loc int32 // byte offset of the expression, for error positions
	num *num  // exact value of a numeric constant (typ int2/4/8, numeric, float8)
}

// num is the value of a numeric constant expression, folded as Postgres
// evaluates it: integer arithmetic in the operands' integer width, numeric
// arithmetic exact with numeric's display scales, float8 in binary floating
// point.
type num struct {
	typ   Type     // typeInt2, TypeInt4, TypeInt8, typeNumeric or typeFloat8
	r     *big.Rat // exact value (for float8: of f)
	scale int      // display scale, for typeNumeric
	f     float64  // for typeFloat8
}

// The ranges Postgres' to_timestamp(double precision) accepts, in seconds
// since the Unix epoch: Julian day 0 to the end of year 294276.
var (
	epochMin = big.NewRat(-210866803200, 1)
	epochMax = big.NewRat(9224318016000, 1)
)

// eval evaluates one argument expression of a Fetchq call.
func (a *analyzer) eval(n *pg_query.Node) (value, *Error) {
	switch {
	case n.GetAConst() != nil:
		return a.evalConst(n.GetAConst())
	case n.GetParamRef() != nil:
		pr := n.GetParamRef()
		t, err := a.param(int(pr.Number), pr.Location)
		if err != nil {
			return value{}, err
		}
		return value{arg: Arg{Kind: ArgParam, Param: int(pr.Number)}, typ: t, loc: pr.Location}, nil
	case n.GetTypeCast() != nil:
		tc := n.GetTypeCast()
		inner, err := a.eval(tc.Arg)
		if err != nil {
			return value{}, err
		}
		return a.cast(inner, tc.TypeName)
	case n.GetFuncCall() != nil:
		fc := n.GetFuncCall()
		switch plainFuncName(fc) {
		case "now", "transaction_timestamp":
			if len(fc.Args) == 0 {
				return nowValue(fc.Location), nil
			}
		case "to_timestamp":
			if len(fc.Args) == 1 {
				return a.evalEpoch(fc)
			}
		}
	case n.GetSqlvalueFunction() != nil:
		sv := n.GetSqlvalueFunction()
		if sv.Op == pg_query.SQLValueFunctionOp_SVFOP_CURRENT_TIMESTAMP {
			return nowValue(sv.Location), nil
		}
	case n.GetAExpr() != nil:
		if v, ok := nowPlusInterval(n.GetAExpr()); ok {
			if strings.TrimSpace(v.arg.Text) == "" {
				// Postgres reads the interval when parsing; an empty one
				// is invalid (and "" means "no interval" in an Arg).
				return value{}, &Error{Code: "22007", Message: `invalid input syntax for type interval: "` + v.arg.Text + `"`, Position: charPos(a.sql, v.loc)}
			}
			return v, nil
		}
		if e := n.GetAExpr(); len(e.Name) == 1 && e.Name[0].GetString_().GetSval() == "-" &&
			e.Lexpr != nil && isNow(e.Lexpr) && e.Rexpr.GetAConst() != nil {
			if _, ok := e.Rexpr.GetAConst().Val.(*pg_query.A_Const_Sval); ok {
				return value{}, &Error{
					Code:     "0A000",
					Message:  "unsupported argument in a call of " + a.fn + "(): NOW() - '...' subtracts a timestamp in Postgres, not an interval",
					Hint:     "write NOW() - INTERVAL '...'",
					Position: charPos(a.sql, e.Location),
				}
			}
		}
		x, err := a.evalNum(n)
		if err != nil {
			return value{}, err
		}
		return numValue(x, n.GetAExpr().Location), nil
	}
	return value{}, a.unsupportedArg(nodeLocation(n))
}

// evalConst evaluates a literal.
func (a *analyzer) evalConst(c *pg_query.A_Const) (value, *Error) {
	if c.Isnull {
		return value{arg: Arg{Kind: ArgNull}, typ: typeUnknown, loc: c.Location}, nil
	}
	switch v := c.Val.(type) {
	case *pg_query.A_Const_Ival:
		x := &num{typ: TypeInt4, r: new(big.Rat).SetInt64(int64(v.Ival.Ival))}
		return numValue(x, c.Location), nil
	case *pg_query.A_Const_Fval:
		x, err := parseNumLiteral(v.Fval.Fval)
		if err != nil {
			err.Position = charPos(a.sql, c.Location)
			return value{}, err
		}
		return numValue(x, c.Location), nil
	case *pg_query.A_Const_Boolval:
		return value{arg: Arg{Kind: ArgConst, Text: boolText(v.Boolval.Boolval)}, typ: TypeBool, loc: c.Location}, nil
	case *pg_query.A_Const_Sval:
		s := v.Sval.Sval
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			return value{}, &Error{Code: "22021", Message: `invalid byte sequence for encoding "UTF8"`, Position: charPos(a.sql, c.Location)}
		}
		return value{arg: Arg{Kind: ArgConst, Text: s}, typ: typeUnknown, loc: c.Location}, nil
	}
	// Bit strings (B'101', X'ff').
	return value{}, a.unsupportedArg(c.Location)
}

func nowValue(loc int32) value {
	return value{arg: Arg{Kind: ArgNow}, typ: TypeTimestamptz, loc: loc}
}

// isNow reports whether n is NOW(), now(), transaction_timestamp() or
// CURRENT_TIMESTAMP (without precision), the transaction start time.
func isNow(n *pg_query.Node) bool {
	if fc := n.GetFuncCall(); fc != nil {
		name := plainFuncName(fc)
		return (name == "now" || name == "transaction_timestamp") && len(fc.Args) == 0
	}
	if sv := n.GetSqlvalueFunction(); sv != nil {
		return sv.Op == pg_query.SQLValueFunctionOp_SVFOP_CURRENT_TIMESTAMP
	}
	return false
}

// nowPlusInterval recognises NOW() + INTERVAL 'x', NOW() - INTERVAL 'x',
// INTERVAL 'x' + NOW(), and NOW() + 'x' (an untyped literal added to a
// timestamptz resolves to timestamptz + interval). NOW() - 'x' is not
// accepted: Postgres resolves it to timestamptz - timestamptz.
func nowPlusInterval(e *pg_query.A_Expr) (value, bool) {
	if e.Kind != pg_query.A_Expr_Kind_AEXPR_OP || len(e.Name) != 1 || e.Lexpr == nil || e.Rexpr == nil {
		return value{}, false
	}
	op := e.Name[0].GetString_().GetSval()
	if op != "+" && op != "-" {
		return value{}, false
	}
	var text string
	var ok bool
	switch {
	case isNow(e.Lexpr):
		text, ok = intervalLiteral(e.Rexpr, op == "+")
	case isNow(e.Rexpr) && op == "+":
		text, ok = intervalLiteral(e.Lexpr, true)
	}
	if !ok {
		return value{}, false
	}
	return value{arg: Arg{Kind: ArgNow, Text: text, Negative: op == "-"}, typ: TypeTimestamptz, loc: e.Location}, true
}

// intervalLiteral returns the text of INTERVAL 'x', 'x'::interval or
// CAST('x' AS interval) (no field or precision qualifier), and of a bare
// 'x' when untyped is true.
func intervalLiteral(n *pg_query.Node, untyped bool) (string, bool) {
	if c := n.GetAConst(); c != nil && untyped {
		s, ok := c.Val.(*pg_query.A_Const_Sval)
		if !ok || c.Isnull {
			return "", false
		}
		return s.Sval.Sval, validText(s.Sval.Sval)
	}
	tc := n.GetTypeCast()
	if tc == nil {
		return "", false
	}
	t, typmod, ok := typeOf(tc.TypeName)
	if !ok || t != typeInterval || typmod != -1 {
		return "", false
	}
	c := tc.Arg.GetAConst()
	if c == nil || c.Isnull {
		return "", false
	}
	s, ok := c.Val.(*pg_query.A_Const_Sval)
	if !ok {
		return "", false
	}
	return s.Sval.Sval, validText(s.Sval.Sval)
}

func validText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// evalEpoch evaluates to_timestamp(<numeric constant expression>).
func (a *analyzer) evalEpoch(fc *pg_query.FuncCall) (value, *Error) {
	if len(fc.AggOrder) > 0 || fc.AggFilter != nil || fc.Over != nil || fc.AggStar || fc.AggDistinct || fc.FuncVariadic {
		return value{}, a.unsupportedArg(fc.Location)
	}
	x := fc.Args[0]
	if c := x.GetAConst(); c != nil {
		if c.Isnull {
			return value{arg: Arg{Kind: ArgNull}, typ: TypeTimestamptz, loc: fc.Location}, nil
		}
		if s, ok := c.Val.(*pg_query.A_Const_Sval); ok {
			// An untyped literal is read as double precision.
			f, ok := parseFloat8(s.Sval.Sval)
			if !ok {
				return value{}, &Error{Code: "22P02", Message: `invalid input syntax for type double precision: "` + s.Sval.Sval + `"`, Position: charPos(a.sql, c.Location)}
			}
			return a.epochValue(floatNum(f), fc.Location)
		}
	}
	if tc := x.GetTypeCast(); tc != nil {
		if c := tc.Arg.GetAConst(); c != nil && c.Isnull {
			return value{arg: Arg{Kind: ArgNull}, typ: TypeTimestamptz, loc: fc.Location}, nil
		}
	}
	n, err := a.evalNum(x)
	if err != nil {
		return value{}, err
	}
	return a.epochValue(n, fc.Location)
}

func (a *analyzer) epochValue(n *num, loc int32) (value, *Error) {
	if n.r == nil || n.r.Cmp(epochMin) < 0 || n.r.Cmp(epochMax) >= 0 {
		f, _ := n.float()
		// Raised when Postgres runs to_timestamp: no position.
		return value{}, &Error{Code: "22008", Message: `timestamp out of range: "` + strconv.FormatFloat(f, 'g', 6, 64) + `"`}
	}
	var text string
	switch n.typ {
	case typeFloat8:
		text = strconv.FormatFloat(n.f, 'f', -1, 64)
	case typeNumeric:
		text = trimZeros(n.r.FloatString(n.scale))
	default:
		text = n.r.Num().String()
	}
	return value{arg: Arg{Kind: ArgEpoch, Text: text}, typ: TypeTimestamptz, loc: loc}, nil
}

// evalNum folds a numeric constant expression: numeric literals, unary
// minus and plus, + - * /, and casts to numeric types of those or of
// string literals.
func (a *analyzer) evalNum(n *pg_query.Node) (*num, *Error) {
	switch {
	case n.GetAConst() != nil:
		c := n.GetAConst()
		switch v := c.Val.(type) {
		case *pg_query.A_Const_Ival:
			return &num{typ: TypeInt4, r: new(big.Rat).SetInt64(int64(v.Ival.Ival))}, nil
		case *pg_query.A_Const_Fval:
			x, err := parseNumLiteral(v.Fval.Fval)
			if err != nil {
				err.Position = charPos(a.sql, c.Location)
			}
			return x, err
		}
	case n.GetTypeCast() != nil:
		tc := n.GetTypeCast()
		t, typmod, ok := typeOf(tc.TypeName)
		if !ok || typmod != -1 {
			break
		}
		switch t {
		case typeInt2, TypeInt4, TypeInt8, typeNumeric, typeFloat8:
		default:
			return nil, a.unsupportedArg(tc.Location)
		}
		if c := tc.Arg.GetAConst(); c != nil && !c.Isnull {
			if s, ok := c.Val.(*pg_query.A_Const_Sval); ok {
				v, err := a.castConst(value{arg: Arg{Kind: ArgConst, Text: s.Sval.Sval}, typ: typeUnknown, loc: c.Location}, t, -1)
				if err != nil {
					return nil, err
				}
				return v.num, nil
			}
		}
		x, err := a.evalNum(tc.Arg)
		if err != nil {
			return nil, err
		}
		return convertNum(x, t)
	case n.GetAExpr() != nil:
		e := n.GetAExpr()
		if e.Kind != pg_query.A_Expr_Kind_AEXPR_OP || len(e.Name) != 1 || e.Rexpr == nil {
			break
		}
		op := e.Name[0].GetString_().GetSval()
		r, err := a.evalNum(e.Rexpr)
		if err != nil {
			return nil, err
		}
		if e.Lexpr == nil { // prefix operator
			switch op {
			case "+":
				return r, nil
			case "-":
				return arith("-", &num{typ: r.typ, r: new(big.Rat)}, r)
			}
			break
		}
		switch op {
		case "+", "-", "*", "/":
		default:
			return nil, a.unsupportedArg(e.Location)
		}
		l, err := a.evalNum(e.Lexpr)
		if err != nil {
			return nil, err
		}
		return arith(op, l, r)
	}
	return nil, a.unsupportedArg(nodeLocation(n))
}

// numValue makes an argument of a folded numeric constant.
func numValue(x *num, loc int32) value {
	return value{arg: Arg{Kind: ArgConst, Text: x.text()}, typ: x.typ, loc: loc, num: x}
}

// text renders x as Postgres' output function would.
func (x *num) text() string {
	switch x.typ {
	case typeNumeric:
		return x.r.FloatString(x.scale)
	case typeFloat8:
		return formatFloat8(x.f)
	}
	return x.r.Num().String()
}

func (x *num) float() (float64, bool) {
	if x.typ == typeFloat8 {
		return x.f, true
	}
	return x.r.Float64()
}

func floatNum(f float64) *num {
	x := &num{typ: typeFloat8, f: f}
	if r, ok := new(big.Rat).SetString(strconv.FormatFloat(f, 'g', -1, 64)); ok && !isInfNaN(f) {
		x.r = r
	}
	return x
}

func isInfNaN(f float64) bool {
	return f != f || f > 1.7976931348623157e308 || f < -1.7976931348623157e308
}

// formatFloat8 prints a double as Postgres' float8out does by default
// (shortest exact representation, exponent from 1e15 up or below 1e-4).
func formatFloat8(f float64) string {
	switch {
	case f != f:
		return "NaN"
	case f > 1.7976931348623157e308:
		return "Infinity"
	case f < -1.7976931348623157e308:
		return "-Infinity"
	}
	abs := f
	if abs < 0 {
		abs = -abs
	}
	if abs != 0 && (abs >= 1e15 || abs < 1e-4) {
		return strconv.FormatFloat(f, 'e', -1, 64)
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// intRange returns the bounds of an integer type and its out-of-range
// message.
func intRange(t Type) (lo, hi int64, msg string) {
	switch t {
	case typeInt2:
		return -1 << 15, 1<<15 - 1, "smallint out of range"
	case TypeInt4:
		return -1 << 31, 1<<31 - 1, "integer out of range"
	}
	return -1 << 63, 1<<63 - 1, "bigint out of range"
}

func isIntType(t Type) bool { return t == typeInt2 || t == TypeInt4 || t == TypeInt8 }

// arith applies a binary operator with Postgres' type rules: the wider
// integer type for two integers (division truncates), numeric as soon as
// one side is numeric, float8 as soon as one side is float8.
//
// Postgres folds such expressions when planning, so its errors (division
// by zero, out of range) carry no position; neither do these.
func arith(op string, l, r *num) (*num, *Error) {
	pos := 0
	divZero := func() *Error { return &Error{Code: "22012", Message: "division by zero", Position: pos} }
	switch {
	case l.typ == typeFloat8 || r.typ == typeFloat8:
		lf, _ := l.float()
		rf, _ := r.float()
		var f float64
		switch op {
		case "+":
			f = lf + rf
		case "-":
			f = lf - rf
		case "*":
			f = lf * rf
		case "/":
			if rf == 0 {
				return nil, divZero()
			}
			f = lf / rf
		}
		if isInfNaN(f) && !isInfNaN(lf) && !isInfNaN(rf) {
			return nil, &Error{Code: "22003", Message: "value out of range: overflow", Position: pos}
		}
		return floatNum(f), nil
	case isIntType(l.typ) && isIntType(r.typ):
		t := l.typ
		if r.typ == TypeInt8 || (r.typ == TypeInt4 && t == typeInt2) {
			t = r.typ
		}
		li, ri := l.r.Num(), r.r.Num()
		z := new(big.Int)
		switch op {
		case "+":
			z.Add(li, ri)
		case "-":
			z.Sub(li, ri)
		case "*":
			z.Mul(li, ri)
		case "/":
			if ri.Sign() == 0 {
				return nil, divZero()
			}
			z.Quo(li, ri)
		}
		lo, hi, msg := intRange(t)
		if !z.IsInt64() || z.Int64() < lo || z.Int64() > hi {
			return nil, &Error{Code: "22003", Message: msg, Position: pos}
		}
		return &num{typ: t, r: new(big.Rat).SetInt(z)}, nil
	}
	// numeric
	z := new(big.Rat)
	scale := 0
	switch op {
	case "+":
		z.Add(l.r, r.r)
		scale = max(l.scale, r.scale)
	case "-":
		z.Sub(l.r, r.r)
		scale = max(l.scale, r.scale)
	case "*":
		z.Mul(l.r, r.r)
		scale = l.scale + r.scale
	case "/":
		if r.r.Sign() == 0 {
			return nil, divZero()
		}
		z.Quo(l.r, r.r)
		scale = divScale(l, r)
		z = roundRat(z, scale)
	}
	if scale > 16383 {
		return nil, &Error{Code: "22003", Message: "value overflows numeric format", Position: pos}
	}
	return &num{typ: typeNumeric, r: z, scale: scale}, nil
}

// divScale is numeric's select_div_scale: at least 16 significant digits,
// and no fewer decimals than either input shows.
func divScale(l, r *num) int {
	w1, d1 := nbaseWeight(l.r)
	w2, d2 := nbaseWeight(r.r)
	qweight := w1 - w2
	if d1 <= d2 {
		qweight--
	}
	rscale := 16 - qweight*4
	rscale = max(rscale, l.scale, r.scale, 0)
	return min(rscale, 1000)
}

// nbaseWeight returns the weight and first digit of |x| written in base
// 10000, as numeric stores it (x is a terminating decimal).
func nbaseWeight(x *big.Rat) (weight, first int) {
	if x.Sign() == 0 {
		return 0, 0
	}
	abs := new(big.Rat).Abs(x)
	ip := new(big.Int).Quo(abs.Num(), abs.Denom())
	if ip.Sign() > 0 {
		s := ip.String()
		l := len(s)
		n, _ := strconv.Atoi(s[:(l-1)%4+1])
		return (l - 1) / 4, n
	}
	// 0 < |x| < 1: find the first base-10000 group after the point that
	// is not zero.
	ten4 := big.NewRat(10000, 1)
	v := new(big.Rat).Set(abs)
	for g := 1; g < 5000; g++ {
		v.Mul(v, ten4)
		d := new(big.Int).Quo(v.Num(), v.Denom())
		if d.Sign() > 0 {
			return -g, int(d.Int64())
		}
	}
	return 0, 0
}

// roundRat rounds x to scale decimals, half away from zero, as numeric
// rounds.
func roundRat(x *big.Rat, scale int) *big.Rat {
	p := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil)
	v := new(big.Rat).Mul(x, new(big.Rat).SetInt(p))
	num := new(big.Int).Abs(v.Num())
	q, m := new(big.Int).QuoRem(num, v.Denom(), new(big.Int))
	if new(big.Int).Lsh(m, 1).Cmp(v.Denom()) >= 0 {
		q.Add(q, big.NewInt(1))
	}
	if v.Sign() < 0 {
		q.Neg(q)
	}
	return new(big.Rat).SetFrac(q, p)
}

// convertNum casts a numeric constant to another numeric type. Postgres
// does it when planning: errors carry no position.
func convertNum(x *num, t Type) (*num, *Error) {
	if x.typ == t {
		return x, nil
	}
	switch t {
	case typeFloat8:
		f, _ := x.float()
		return floatNum(f), nil
	case typeNumeric:
		if x.typ == typeFloat8 {
			if x.r == nil {
				return nil, &Error{Code: "0A000", Message: "cannot convert infinity or NaN to numeric"}
			}
			// float8 -> numeric keeps 15 significant digits.
			s := strconv.FormatFloat(x.f, 'g', 15, 64)
			n, err := parseNumLiteral(s)
			if err != nil {
				return nil, err
			}
			if n.typ != typeNumeric {
				n = &num{typ: typeNumeric, r: n.r}
			}
			return n, nil
		}
		return &num{typ: typeNumeric, r: x.r}, nil
	}
	// To an integer type: numeric rounds half away from zero, float8
	// rounds half to even.
	var z *big.Int
	switch x.typ {
	case typeFloat8:
		if x.r == nil {
			_, _, msg := intRange(t)
			return nil, &Error{Code: "22003", Message: msg}
		}
		z = new(big.Int)
		new(big.Float).SetFloat64(roundEven(x.f)).Int(z)
	default:
		z = roundRat(x.r, 0).Num()
	}
	lo, hi, msg := intRange(t)
	if !z.IsInt64() || z.Int64() < lo || z.Int64() > hi {
		return nil, &Error{Code: "22003", Message: msg}
	}
	return &num{typ: t, r: new(big.Rat).SetInt(z)}, nil
}

func roundEven(f float64) float64 {
	bf := new(big.Float).SetFloat64(f)
	i, acc := bf.Int(nil)
	if acc == big.Exact {
		return f
	}
	fl := new(big.Float).SetInt(i) // truncated toward zero
	diff := new(big.Float).Sub(bf, fl)
	d, _ := diff.Float64()
	one := big.NewInt(1)
	if f < 0 {
		d = -d
		one = big.NewInt(-1)
	}
	if d > 0.5 || (d == 0.5 && i.Bit(0) == 1) {
		i.Add(i, one)
	}
	r, _ := new(big.Float).SetInt(i).Float64()
	return r
}

// parseNumLiteral types a numeric literal the way Postgres 16 does: an
// integer (decimal, or 0x/0o/0b, underscores allowed) is int4 when it fits,
// else int8, else numeric; anything with a point or an exponent is
// numeric with the display scale numeric_in gives it.
func parseNumLiteral(s string) (*num, *Error) {
	body := s
	neg := false
	if strings.HasPrefix(body, "-") {
		neg, body = true, body[1:]
	} else if strings.HasPrefix(body, "+") {
		body = body[1:]
	}
	bad := func() (*num, *Error) {
		return nil, &Error{Code: "22P02", Message: `invalid input syntax for type numeric: "` + s + `"`}
	}
	if strings.Contains(body, "__") || strings.HasPrefix(body, "_") || strings.HasSuffix(body, "_") {
		return bad()
	}
	clean := strings.ReplaceAll(body, "_", "")
	if clean == "" {
		return bad()
	}
	var z *big.Int
	lower := strings.ToLower(clean)
	switch {
	case strings.HasPrefix(lower, "0x"), strings.HasPrefix(lower, "0o"), strings.HasPrefix(lower, "0b"):
		var ok bool
		z, ok = new(big.Int).SetString(lower, 0)
		if !ok {
			return bad()
		}
	case !strings.ContainsAny(lower, ".e"):
		var ok bool
		z, ok = new(big.Int).SetString(lower, 10)
		if !ok {
			return bad()
		}
	}
	if z != nil {
		if neg {
			z.Neg(z)
		}
		t := typeNumeric
		if z.IsInt64() {
			t = TypeInt8
			if v := z.Int64(); v >= -1<<31 && v <= 1<<31-1 {
				t = TypeInt4
			}
		}
		return &num{typ: t, r: new(big.Rat).SetInt(z)}, nil
	}
	mant, exp := lower, 0
	if i := strings.IndexByte(lower, 'e'); i >= 0 {
		mant = lower[:i]
		e, err := strconv.Atoi(lower[i+1:])
		if err != nil {
			return bad()
		}
		if e > 1000 || e < -1000 {
			return nil, &Error{Code: "22003", Message: "value overflows numeric format"}
		}
		exp = e
	}
	frac := 0
	if i := strings.IndexByte(mant, '.'); i >= 0 {
		frac = len(mant) - i - 1
		if strings.IndexByte(mant[i+1:], '.') >= 0 {
			return bad()
		}
	}
	for _, ch := range mant {
		if ch != '.' && (ch < '0' || ch > '9') {
			return bad()
		}
	}
	if mant == "." {
		return bad()
	}
	r, ok := new(big.Rat).SetString(mant)
	if !ok {
		return bad()
	}
	if exp != 0 {
		p := new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs(exp))), nil))
		if exp > 0 {
			r.Mul(r, p)
		} else {
			r.Quo(r, p)
		}
	}
	if neg {
		r.Neg(r)
	}
	return &num{typ: typeNumeric, r: r, scale: max(0, frac-exp)}, nil
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// parseFloat8 reads a string as float8in does, accepting only plain
// decimal numbers (with optional exponent) and surrounding blanks.
func parseFloat8(s string) (float64, bool) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, false
	}
	for i, ch := range t {
		switch {
		case ch >= '0' && ch <= '9', ch == '.', ch == 'e', ch == 'E':
		case (ch == '+' || ch == '-') && (i == 0 || t[i-1] == 'e' || t[i-1] == 'E'):
		default:
			return 0, false
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil {
		return 0, false
	}
	return f, true
}

// trimZeros drops trailing fractional zeros (and a bare point).
func trimZeros(s string) string {
	if strings.IndexByte(s, '.') < 0 {
		return s
	}
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

func boolText(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// plainFuncName returns the name of a call to a built-in function written
// without a schema or with pg_catalog, and without aggregate decorations;
// "" otherwise.
func plainFuncName(fc *pg_query.FuncCall) string {
	if len(fc.AggOrder) > 0 || fc.AggFilter != nil || fc.Over != nil || fc.AggStar || fc.AggDistinct || fc.FuncVariadic || fc.AggWithinGroup {
		return ""
	}
	switch len(fc.Funcname) {
	case 1:
		return fc.Funcname[0].GetString_().GetSval()
	case 2:
		if fc.Funcname[0].GetString_().GetSval() == "pg_catalog" {
			return fc.Funcname[1].GetString_().GetSval()
		}
	}
	return ""
}

// typeOf maps a TypeName to a supported type and its typmod (-1 for none;
// the length of varchar(n)). ok is false for any other type, array, or
// modifier.
func typeOf(tn *pg_query.TypeName) (t Type, typmod int, ok bool) {
	if tn == nil || tn.Setof || tn.PctType || len(tn.ArrayBounds) > 0 {
		return 0, 0, false
	}
	names := tn.Names
	if len(names) == 2 && names[0].GetString_().GetSval() == "pg_catalog" {
		names = names[1:]
	}
	if len(names) != 1 {
		return 0, 0, false
	}
	t, ok = typeByName[names[0].GetString_().GetSval()]
	if !ok {
		return 0, 0, false
	}
	switch len(tn.Typmods) {
	case 0:
		return t, -1, true
	case 1:
		if t != TypeVarchar {
			return 0, 0, false
		}
		c := tn.Typmods[0].GetAConst()
		if c == nil {
			return 0, 0, false
		}
		iv, isInt := c.Val.(*pg_query.A_Const_Ival)
		if !isInt || c.Isnull {
			return 0, 0, false
		}
		return t, int(iv.Ival.Ival), true
	}
	return 0, 0, false
}

// cast applies an explicit cast (::T, CAST(x AS T)) to an evaluated value.
func (a *analyzer) cast(v value, tn *pg_query.TypeName) (value, *Error) {
	t, typmod, ok := typeOf(tn)
	if !ok {
		return value{}, a.unsupportedArg(tn.Location)
	}
	if typmod != -1 && (typmod < 1 || typmod > 10485760) {
		msg := "length for type varchar must be at least 1"
		if typmod > 10485760 {
			msg = "length for type varchar cannot exceed 10485760"
		}
		return value{}, &Error{Code: "22023", Message: msg, Position: charPos(a.sql, tn.Location)}
	}
	switch v.arg.Kind {
	case ArgParam:
		if typmod != -1 {
			return value{}, a.unsupportedArg(tn.Location)
		}
		if v.typ == typeUnknown {
			if err := a.setParam(v.arg.Param, t, v.loc); err != nil {
				return value{}, err
			}
		} else if v.typ != t {
			return value{}, a.unsupportedArg(tn.Location)
		}
		v.typ = t
		return v, nil
	case ArgNull:
		v.typ = t
		return v, nil
	case ArgNow, ArgEpoch:
		if t != TypeTimestamptz {
			return value{}, a.unsupportedArg(tn.Location)
		}
		return v, nil
	}
	return a.castConst(v, t, typmod)
}

// castConst converts a constant to type t as an explicit cast would:
// string input is checked by the target type's input rules where the
// rewriter knows them (integers, booleans), numbers are converted and
// rounded, varchar(n) truncates.
func (a *analyzer) castConst(v value, t Type, typmod int) (value, *Error) {
	pos := charPos(a.sql, v.loc)
	if t == typeFloat4 || v.typ == typeFloat4 {
		return value{}, a.unsupportedArg(v.loc)
	}
	out := value{arg: v.arg, typ: t, loc: v.loc}
	src := v.typ
	switch {
	case src == typeUnknown || src == TypeText || src == TypeVarchar:
		s := v.arg.Text
		switch t {
		case typeInt2, TypeInt4, TypeInt8:
			z, err := parseIntInput(s, t)
			if err != nil {
				err.Position = pos
				return value{}, err
			}
			out.num = &num{typ: t, r: new(big.Rat).SetInt64(z)}
			out.arg.Text = itoa(z)
		case typeNumeric:
			x, err := parseNumLiteral(strings.TrimSpace(s))
			if err != nil {
				err.Position = pos
				return value{}, err
			}
			if x.typ != typeNumeric {
				x = &num{typ: typeNumeric, r: x.r}
			}
			out.num = x
			out.arg.Text = x.text()
		case typeFloat8:
			f, ok := parseFloat8(s)
			if !ok {
				return value{}, &Error{Code: "22P02", Message: `invalid input syntax for type double precision: "` + s + `"`, Position: pos}
			}
			out.num = floatNum(f)
			out.arg.Text = out.num.text()
		case TypeBool:
			b, ok := parseBoolInput(s)
			if !ok {
				return value{}, &Error{Code: "22P02", Message: `invalid input syntax for type boolean: "` + s + `"`, Position: pos}
			}
			out.arg.Text = boolText(b)
		case TypeVarchar:
			out.arg.Text = truncate(s, typmod)
		}
		// Any other target reads the text with its input function,
		// exactly as for an untyped literal: the text is kept as is.
		return out, nil
	case v.num != nil:
		switch t {
		case typeInt2, TypeInt4, TypeInt8, typeNumeric, typeFloat8:
			x, err := convertNum(v.num, t)
			if err != nil {
				return value{}, err
			}
			out.num = x
			out.arg.Text = x.text()
			return out, nil
		case TypeText:
			return out, nil
		case TypeVarchar:
			out.arg.Text = truncate(v.arg.Text, typmod)
			return out, nil
		case TypeBool:
			if src == TypeInt4 {
				out.arg.Text = boolText(v.num.r.Sign() != 0)
				return out, nil
			}
		}
	case src == TypeBool:
		switch t {
		case TypeBool, TypeText:
			return out, nil
		case TypeVarchar:
			out.arg.Text = truncate(v.arg.Text, typmod)
			return out, nil
		case TypeInt4:
			var i int64
			if v.arg.Text == "true" {
				i = 1
			}
			out.arg.Text = itoa(i)
			out.num = &num{typ: TypeInt4, r: big.NewRat(i, 1)}
			return out, nil
		}
	default:
		// A typed constant of another type (jsonb, timestamp, ...): only
		// a cast to the same type is known to keep the value as written.
		if src == t && typmod == -1 {
			return out, nil
		}
		return value{}, &Error{Code: "0A000", Message: "unsupported cast from " + src.pgName() + " to " + t.pgName() + " in a Fetchq call argument", Hint: "cast the literal directly: '...'::" + t.String(), Position: pos}
	}
	return value{}, &Error{Code: "42846", Message: "cannot cast type " + src.pgName() + " to " + t.pgName(), Position: pos}
}

// truncate applies varchar(n)'s explicit-cast truncation to n characters.
func truncate(s string, n int) string {
	if n < 0 {
		return s
	}
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos]
		}
		i++
	}
	return s
}

// parseIntInput reads a string as int2in/int4in/int8in do in Postgres 16:
// surrounding blanks, a sign, decimal digits or a 0x/0o/0b prefix,
// underscores between digits.
func parseIntInput(s string, t Type) (int64, *Error) {
	name := map[Type]string{typeInt2: "smallint", TypeInt4: "integer", TypeInt8: "bigint"}[t]
	bad := &Error{Code: "22P02", Message: "invalid input syntax for type " + name + `: "` + s + `"`}
	body := strings.Trim(s, " \t\n\r\v\f")
	neg := false
	if strings.HasPrefix(body, "-") {
		neg, body = true, body[1:]
	} else if strings.HasPrefix(body, "+") {
		body = body[1:]
	}
	base := 10
	lower := strings.ToLower(body)
	switch {
	case strings.HasPrefix(lower, "0x"):
		base, body = 16, body[2:]
	case strings.HasPrefix(lower, "0o"):
		base, body = 8, body[2:]
	case strings.HasPrefix(lower, "0b"):
		base, body = 2, body[2:]
	}
	if body == "" || strings.HasPrefix(body, "_") || strings.HasSuffix(body, "_") || strings.Contains(body, "__") {
		return 0, bad
	}
	clean := strings.ReplaceAll(body, "_", "")
	for _, ch := range strings.ToLower(clean) {
		d := -1
		switch {
		case ch >= '0' && ch <= '9':
			d = int(ch - '0')
		case ch >= 'a' && ch <= 'f':
			d = int(ch-'a') + 10
		}
		if d < 0 || d >= base {
			return 0, bad
		}
	}
	z, ok := new(big.Int).SetString(clean, base)
	if !ok {
		return 0, bad
	}
	if neg {
		z.Neg(z)
	}
	lo, hi, _ := intRange(t)
	if !z.IsInt64() || z.Int64() < lo || z.Int64() > hi {
		return 0, &Error{Code: "22003", Message: `value "` + s + `" is out of range for type ` + name}
	}
	return z.Int64(), nil
}

// parseBoolInput reads a string as boolin does: t, true, y, yes, on, 1
// and f, false, n, no, off, 0, any unique prefix, any case, blanks around.
func parseBoolInput(s string) (bool, bool) {
	v := strings.ToLower(strings.Trim(s, " \t\n\r\v\f"))
	if v == "" {
		return false, false
	}
	prefixOf := func(word string, min int) bool {
		return len(v) >= min && len(v) <= len(word) && word[:len(v)] == v
	}
	switch {
	case prefixOf("true", 1), prefixOf("yes", 1), prefixOf("on", 2), v == "1":
		return true, true
	case prefixOf("false", 1), prefixOf("no", 1), prefixOf("off", 2), v == "0":
		return false, true
	}
	return false, false
}
