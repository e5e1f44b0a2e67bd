package rewrite

import (
	"regexp"
	"sort"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v5"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// schema is the schema whose functions the proxy runs itself.
const schema = "fetchq"

// analyzer classifies the statements of one text. It holds what Postgres'
// parse analysis shares between the statements of one Parse: the types
// deduced for $n parameters.
type analyzer struct {
	sql    string
	params []Type // type of $n at index n-1 (declared, or deduced); 0 = unknown
	fn     string // "fetchq.<name>" of the call being analysed, for messages
}

// newAnalyzer starts the analysis of sql; declared holds the parameter
// types of a Parse message (0 for unspecified).
func newAnalyzer(sql string, declared []uint32) *analyzer {
	a := &analyzer{sql: sql}
	if len(declared) > 0 {
		a.params = make([]Type, len(declared))
		for i, t := range declared {
			a.params[i] = Type(t)
		}
	}
	return a
}

// statement classifies one parsed statement: a supported Fetchq call, a
// statement to forward (nil, nil), or an error.
func (a *analyzer) statement(n *pg_query.Node) (*Call, *Error) {
	if n == nil {
		return nil, nil
	}
	switch s := n.Node.(type) {
	case *pg_query.Node_DoStmt:
		for _, opt := range s.DoStmt.Args {
			if de := opt.GetDefElem(); de != nil && de.Defname == "as" {
				if name, ok := bodyCall(de.Arg.GetString_().GetSval()); ok {
					return nil, a.unsupportedUse(name, de.Location, "in a DO block")
				}
			}
		}
	case *pg_query.Node_CreateFunctionStmt:
		cf := s.CreateFunctionStmt
		if len(cf.Funcname) == 2 && cf.Funcname[0].GetString_().GetSval() == schema {
			// Defining Fetchq's own functions (the extension's script):
			// DDL, forwarded as is.
			return nil, nil
		}
		for _, opt := range cf.Options {
			de := opt.GetDefElem()
			if de == nil || de.Defname != "as" {
				continue
			}
			for _, item := range de.Arg.GetList().GetItems() {
				if name, ok := bodyCall(item.GetString_().GetSval()); ok {
					return nil, a.unsupportedUse(name, de.Location, "inside a function body")
				}
			}
		}
	}
	calls := findCalls(n)
	if len(calls) == 0 {
		return nil, nil
	}
	first := calls[0]
	sel := n.GetSelectStmt()
	if sel == nil {
		return nil, a.unsupportedUse(funcName(first), first.Location, stmtReason(n))
	}
	return a.selectCall(sel, first)
}

// selectCall recognises the supported SELECT shapes around a Fetchq call:
//
//	SELECT fetchq.f(args) [[AS] alias]
//	SELECT [cols] FROM fetchq.f(args) [[AS] alias[(colaliases)]]
//
// where cols are *, alias.*, col, alias.col, each optionally aliased.
func (a *analyzer) selectCall(sel *pg_query.SelectStmt, first *pg_query.FuncCall) (*Call, *Error) {
	fail := func(reason string) (*Call, *Error) {
		return nil, a.unsupportedUse(funcName(first), first.Location, reason)
	}
	if reason := clauseViolation(sel); reason != "" {
		return fail(reason)
	}
	if len(sel.FromClause) == 0 {
		if len(sel.TargetList) != 1 {
			return fail("alongside other expressions in the select list")
		}
		rt := sel.TargetList[0].GetResTarget()
		fc := rt.GetVal().GetFuncCall()
		if fc == nil || !isFetchq(fc) {
			return fail("inside an expression")
		}
		call, err := a.call(fc)
		if err != nil {
			return nil, err
		}
		name := rt.Name
		if name == "" {
			name = funcName(fc)
		}
		call.Columns = []OutputColumn{wholeRow(call.Func, name)}
		return call, nil
	}
	if len(sel.FromClause) != 1 {
		return fail("in a join")
	}
	from := sel.FromClause[0]
	rf := from.GetRangeFunction()
	switch {
	case from.GetJoinExpr() != nil:
		return fail("in a join")
	case from.GetRangeSubselect() != nil:
		return fail("in a subquery")
	case rf == nil:
		return fail("in a query that reads a table")
	case rf.IsRowsfrom || len(rf.Functions) != 1:
		return fail("in ROWS FROM (...)")
	case rf.Ordinality:
		return fail("WITH ORDINALITY")
	}
	items := rf.Functions[0].GetList().GetItems()
	var fc *pg_query.FuncCall
	if len(items) > 0 {
		fc = items[0].GetFuncCall()
	}
	if fc == nil || !isFetchq(fc) {
		return fail("alongside a FROM clause")
	}
	for _, t := range sel.TargetList {
		rt := t.GetResTarget()
		if rt == nil || rt.GetVal().GetColumnRef() == nil || len(rt.Indirection) > 0 {
			return fail("with expressions in the select list")
		}
	}
	call, err := a.call(fc)
	if err != nil {
		return nil, err
	}
	coldefs := rf.Coldeflist
	if len(items) > 1 && len(items[1].GetList().GetItems()) > 0 {
		coldefs = items[1].GetList().GetItems()
	}
	if len(coldefs) > 0 {
		msg := "a column definition list is redundant for a function with OUT parameters"
		if call.Func.Returns == ReturnScalar {
			msg = `a column definition list is only allowed for functions returning "record"`
		}
		return nil, &Error{Code: "42601", Message: msg, Position: charPos(a.sql, nodeLocation(coldefs[0]))}
	}
	cols, rte, err := a.fromColumns(call.Func, rf.Alias)
	if err != nil {
		return nil, err
	}
	call.Columns = []OutputColumn{}
	for _, t := range sel.TargetList {
		out, err := a.target(t.GetResTarget(), call.Func, cols, rte)
		if err != nil {
			return nil, err
		}
		call.Columns = append(call.Columns, out...)
	}
	return call, nil
}

// clauseViolation names the first clause of sel that a Fetchq call cannot
// be combined with, or returns "".
func clauseViolation(sel *pg_query.SelectStmt) string {
	switch {
	case sel.WithClause != nil:
		return "in a query with a WITH clause"
	case sel.Op != pg_query.SetOperation_SETOP_NONE:
		return "in a UNION, INTERSECT or EXCEPT"
	case len(sel.ValuesLists) > 0:
		return "in a VALUES list"
	case sel.IntoClause != nil:
		return "in SELECT INTO"
	case len(sel.DistinctClause) > 0:
		return "with DISTINCT"
	case sel.WhereClause != nil:
		return "with a WHERE clause"
	case len(sel.GroupClause) > 0 || sel.GroupDistinct:
		return "with GROUP BY"
	case sel.HavingClause != nil:
		return "with HAVING"
	case len(sel.WindowClause) > 0:
		return "with a WINDOW clause"
	case len(sel.SortClause) > 0:
		return "with ORDER BY"
	case sel.LimitCount != nil || sel.LimitOffset != nil:
		return "with LIMIT or OFFSET"
	case len(sel.LockingClause) > 0:
		return "with FOR UPDATE or FOR SHARE"
	}
	return ""
}

// stmtReason says in which kind of statement a call was found.
func stmtReason(n *pg_query.Node) string {
	switch n.Node.(type) {
	case *pg_query.Node_InsertStmt:
		return "in an INSERT statement"
	case *pg_query.Node_UpdateStmt:
		return "in an UPDATE statement"
	case *pg_query.Node_DeleteStmt:
		return "in a DELETE statement"
	case *pg_query.Node_MergeStmt:
		return "in a MERGE statement"
	case *pg_query.Node_ExplainStmt:
		return "in EXPLAIN (the proxy runs the call itself: there is no plan to show)"
	case *pg_query.Node_PrepareStmt:
		return "in PREPARE (use the extended protocol's Parse instead)"
	case *pg_query.Node_CreateTableAsStmt:
		return "in CREATE TABLE AS"
	case *pg_query.Node_ViewStmt:
		return "in CREATE VIEW"
	case *pg_query.Node_CopyStmt:
		return "in COPY"
	case *pg_query.Node_CallStmt:
		return "with CALL (it is a function)"
	case *pg_query.Node_DeclareCursorStmt:
		return "in DECLARE CURSOR"
	case *pg_query.Node_CreateFunctionStmt:
		return "inside a function body"
	case *pg_query.Node_RuleStmt:
		return "in CREATE RULE"
	}
	return "inside this kind of statement"
}

// call evaluates the arguments of a Fetchq call and resolves its overload.
func (a *analyzer) call(fc *pg_query.FuncCall) (*Call, *Error) {
	name := funcName(fc)
	a.fn = schema + "." + name
	if len(fc.Funcname) != 2 {
		return nil, a.unsupportedUse(name, fc.Location, "with a database-qualified name")
	}
	switch {
	case fc.AggStar:
		return nil, a.unsupportedUse(name, fc.Location, "with * as argument")
	case fc.FuncVariadic:
		return nil, a.unsupportedUse(name, fc.Location, "with VARIADIC")
	case len(fc.AggOrder) > 0 || fc.AggFilter != nil || fc.Over != nil || fc.AggWithinGroup || fc.AggDistinct:
		return nil, a.unsupportedUse(name, fc.Location, "with aggregate or window syntax")
	case len(fc.Args) > 100:
		return nil, &Error{Code: "54023", Message: "cannot pass more than 100 arguments to a function", Position: charPos(a.sql, fc.Location)}
	}
	vals := make([]value, len(fc.Args))
	for i, n := range fc.Args {
		if na := n.GetNamedArgExpr(); na != nil {
			return nil, &Error{
				Code:     "0A000",
				Message:  "named arguments are not supported in calls of " + a.fn + "()",
				Hint:     "pass the arguments by position: SELECT * FROM " + a.fn + "(...)",
				Position: charPos(a.sql, na.Location),
			}
		}
		v, err := a.eval(n)
		if err != nil {
			if err.Code == "0A000" && err.Position == 0 {
				// Some nodes (INTERVAL '1' HOUR) have no location.
				err.Position = charPos(a.sql, nodeLocation(n))
			}
			return nil, err
		}
		vals[i] = v
	}
	types := make([]Type, len(vals))
	for i, v := range vals {
		types[i] = v.typ
	}
	f, err := resolve(name, types)
	if err != nil {
		err.Position = charPos(a.sql, fc.Location)
		return nil, err
	}
	call := &Call{Func: f, Args: make([]Arg, len(vals))}
	for i, v := range vals {
		arg, err := a.coerce(v, f.Args[i].Type)
		if err != nil {
			return nil, err
		}
		call.Args[i] = arg
	}
	return call, nil
}

// coerce passes an argument to a parameter of the resolved overload, as
// Postgres' implicit coercion does: untyped literals are read by the
// parameter type's input rules, untyped $n take the parameter's type.
func (a *analyzer) coerce(v value, t Type) (Arg, *Error) {
	if v.typ == t {
		return v.arg, nil
	}
	if (v.typ == typeDate || v.typ == typeTimestamp) && t == TypeTimestamptz {
		return Arg{}, &Error{
			Code:     "0A000",
			Message:  "a " + v.typ.pgName() + " value cannot be passed to " + a.fn + "() as timestamp with time zone",
			Hint:     "cast it to timestamptz, or pass the literal untyped: '2030-01-01 00:00'",
			Position: charPos(a.sql, v.loc),
		}
	}
	switch v.arg.Kind {
	case ArgParam:
		if v.typ == typeUnknown {
			if err := a.setParam(v.arg.Param, t, v.loc); err != nil {
				return Arg{}, err
			}
		}
	case ArgConst:
		if v.typ == typeUnknown || v.typ == TypeText || v.typ == TypeVarchar {
			c, err := a.castConst(v, t, -1)
			if err != nil {
				return Arg{}, err
			}
			return c.arg, nil
		}
	}
	return v.arg, nil
}

// fromColumns returns the columns a FROM item fetchq.f(...) [AS x(a, b)]
// exposes, and the name the item is referred to by.
func (a *analyzer) fromColumns(f *Function, alias *pg_query.Alias) ([]OutputColumn, string, *Error) {
	cols := make([]OutputColumn, len(f.Out))
	for i, c := range f.Out {
		cols[i] = OutputColumn{Name: c.Name, Source: i, TypeOID: uint32(c.Type)}
	}
	rte := f.Name
	if alias == nil {
		return cols, rte, nil
	}
	rte = alias.Aliasname
	if len(alias.Colnames) > len(cols) {
		return nil, "", &Error{
			Code:    "42P10",
			Message: `table "` + rte + `" has ` + itoa(int64(len(cols))) + " columns available but " + itoa(int64(len(alias.Colnames))) + " columns specified",
		}
	}
	for i, n := range alias.Colnames {
		cols[i].Name = n.GetString_().GetSval()
	}
	return cols, rte, nil
}

// target resolves one select-list entry over the columns of a FROM
// fetchq.f(...) item.
func (a *analyzer) target(rt *pg_query.ResTarget, f *Function, cols []OutputColumn, rte string) ([]OutputColumn, *Error) {
	ref := rt.GetVal().GetColumnRef()
	pos := charPos(a.sql, ref.Location)
	var names []string
	star := false
	for i, fld := range ref.Fields {
		switch {
		case fld.GetAStar() != nil && i == len(ref.Fields)-1:
			star = true
		case fld.GetString_() != nil:
			names = append(names, fld.GetString_().Sval)
		default:
			return nil, a.unsupportedUse(f.Name, ref.Location, "with this select list")
		}
	}
	missing := func(t string) *Error {
		return &Error{Code: "42P01", Message: `missing FROM-clause entry for table "` + t + `"`, Position: pos}
	}
	switch {
	case star && len(names) == 0:
		return cols, nil
	case star && len(names) == 1:
		if names[0] != rte {
			return nil, missing(names[0])
		}
		return cols, nil
	case !star && len(names) == 1:
		col, found, err := findColumn(cols, names[0], pos)
		if err != nil {
			return nil, err
		}
		if !found {
			if names[0] != rte {
				return nil, &Error{Code: "42703", Message: `column "` + names[0] + `" does not exist`, Position: pos}
			}
			col = wholeRow(f, names[0])
		}
		if rt.Name != "" {
			col.Name = rt.Name
		}
		return []OutputColumn{col}, nil
	case !star && len(names) == 2:
		if names[0] != rte {
			return nil, missing(names[0])
		}
		col, found, err := findColumn(cols, names[1], pos)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, &Error{Code: "42703", Message: "column " + names[0] + "." + names[1] + " does not exist", Position: pos}
		}
		if rt.Name != "" {
			col.Name = rt.Name
		}
		return []OutputColumn{col}, nil
	}
	return nil, a.unsupportedUse(f.Name, ref.Location, "with a qualified column reference")
}

func findColumn(cols []OutputColumn, name string, pos int) (OutputColumn, bool, *Error) {
	var col OutputColumn
	found := false
	for _, c := range cols {
		if c.Name == name {
			if found {
				return col, false, &Error{Code: "42702", Message: `column reference "` + name + `" is ambiguous`, Position: pos}
			}
			col, found = c, true
		}
	}
	return col, found, nil
}

// wholeRow is the column of SELECT fetchq.f(...) or of a reference to the
// whole FROM item: the function's single value, or its row as a record.
func wholeRow(f *Function, name string) OutputColumn {
	if f.Returns == ReturnScalar {
		return OutputColumn{Name: name, Source: -1, TypeOID: uint32(f.Out[0].Type)}
	}
	return OutputColumn{Name: name, Source: -1, TypeOID: uint32(TypeRecord), Composite: true}
}

// param returns the type $n has so far (unknown when untyped).
func (a *analyzer) param(n int, loc int32) (Type, *Error) {
	if n < 1 || n > maxParam {
		return 0, &Error{Code: "42P02", Message: "there is no parameter $" + itoa(int64(n)), Position: charPos(a.sql, loc)}
	}
	if n > len(a.params) {
		a.params = append(a.params, make([]Type, n-len(a.params))...)
	}
	if a.params[n-1] == 0 {
		a.params[n-1] = typeUnknown
	}
	return a.params[n-1], nil
}

// setParam gives the untyped $n a type, as Postgres does the first time
// it coerces it; a second, different type is an error.
func (a *analyzer) setParam(n int, t Type, loc int32) *Error {
	cur := a.params[n-1]
	if cur == typeUnknown || cur == 0 {
		a.params[n-1] = t
		return nil
	}
	if cur == t {
		return nil
	}
	return &Error{
		Code:     "42P08",
		Message:  "inconsistent types deduced for parameter $" + itoa(int64(n)),
		Detail:   cur.pgName() + " versus " + t.pgName(),
		Position: charPos(a.sql, loc),
	}
}

// paramTypes returns the OIDs of $1..$N once every statement is analysed.
func (a *analyzer) paramTypes() ([]uint32, *Error) {
	if len(a.params) == 0 {
		return nil, nil
	}
	out := make([]uint32, len(a.params))
	for i, t := range a.params {
		if t == 0 || t == typeUnknown {
			return nil, &Error{Code: "42P18", Message: "could not determine data type of parameter $" + itoa(int64(i+1))}
		}
		out[i] = uint32(t)
	}
	return out, nil
}

// unsupportedUse is the 0A000 error for a Fetchq call in a shape the
// proxy cannot run.
func (a *analyzer) unsupportedUse(name string, loc int32, reason string) *Error {
	fn := schema + "." + name
	return &Error{
		Code:     "0A000",
		Message:  fn + "() cannot be called " + reason,
		Detail:   "fetchq-proxy runs Fetchq functions itself; they do not exist in the database",
		Hint:     "call it on its own: SELECT * FROM " + fn + "(...)",
		Position: charPos(a.sql, loc),
	}
}

// unsupportedArg is the 0A000 error for an argument the proxy cannot
// evaluate (a column, a subquery, an arbitrary expression).
func (a *analyzer) unsupportedArg(loc int32) *Error {
	fn := a.fn
	if fn == "" {
		fn = schema + ".f"
	}
	return &Error{
		Code:     "0A000",
		Message:  "unsupported argument in a call of " + fn + "()",
		Detail:   "arguments must be literals, NULL, $n parameters, casts of those, NOW() or CURRENT_TIMESTAMP optionally plus or minus an INTERVAL literal, or to_timestamp(<number>)",
		Hint:     "pass constants or $n parameters: SELECT * FROM " + fn + "($1, ...)",
		Position: charPos(a.sql, loc),
	}
}

// isFetchq reports whether a call names a function in the fetchq schema
// (fetchq.f, or db.fetchq.f).
func isFetchq(fc *pg_query.FuncCall) bool {
	n := len(fc.Funcname)
	return n >= 2 && fc.Funcname[n-2].GetString_().GetSval() == schema
}

// funcName is the unqualified name of a call.
func funcName(fc *pg_query.FuncCall) string {
	if len(fc.Funcname) == 0 {
		return ""
	}
	return fc.Funcname[len(fc.Funcname)-1].GetString_().GetSval()
}

// findCalls returns every call of a fetchq function in the tree, in text
// order.
func findCalls(n *pg_query.Node) []*pg_query.FuncCall {
	var out []*pg_query.FuncCall
	walk(n.ProtoReflect(), func(m protoreflect.Message) {
		if fc, ok := m.Interface().(*pg_query.FuncCall); ok && isFetchq(fc) {
			out = append(out, fc)
		}
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Location < out[j].Location })
	return out
}

// walk calls fn on m and every message below it.
func walk(m protoreflect.Message, fn func(protoreflect.Message)) {
	fn(m)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				walk(l.Get(i).Message(), fn)
			}
		case fd.IsMap():
		default:
			walk(v.Message(), fn)
		}
		return true
	})
}

// nodeLocation returns the location field of the node inside n, or -1.
func nodeLocation(n *pg_query.Node) int32 {
	if n == nil {
		return -1
	}
	m := n.ProtoReflect()
	oo := m.Descriptor().Oneofs()
	if oo.Len() == 0 {
		return -1
	}
	fd := m.WhichOneof(oo.Get(0))
	if fd == nil || fd.Kind() != protoreflect.MessageKind {
		return -1
	}
	inner := m.Get(fd).Message()
	lf := inner.Descriptor().Fields().ByName("location")
	if lf == nil {
		return -1
	}
	return int32(inner.Get(lf).Int())
}

// bodyCallRE finds fetchq.f( in the text of a DO block or function body.
var bodyCallRE = regexp.MustCompile(`(?i)\bfetchq"?\s*\.\s*"?([a-z_][a-z0-9_$]*)"?\s*\(`)

// bodyCall reports the first call of a known Fetchq function in a
// procedural body (text that Postgres parses only when it runs it).
func bodyCall(body string) (name string, ok bool) {
	if !containsFetchq(body) {
		return "", false
	}
	for _, m := range bodyCallRE.FindAllStringSubmatch(body, -1) {
		name := strings.ToLower(m[1])
		if len(Lookup(name)) > 0 {
			return name, true
		}
	}
	return "", false
}
