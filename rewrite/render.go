package rewrite

import "strings"

// SQL renders the call as a canonical statement that rewrites to the same
// overload and arguments: SELECT * FROM fetchq.f(args), every argument
// cast to its parameter's type so that overload resolution is exact.
// Constants are written as standard string literals (quotes doubled),
// parameters as $n::type, ArgNow as NOW() [+|- INTERVAL '...'], ArgEpoch
// as to_timestamp(<seconds>). The select list is always *: SQL says which
// function runs with which values, not which columns the client asked
// for. It is meant for logs, tests and forwarding to a real Fetchq.
func (c *Call) SQL() string {
	var b strings.Builder
	b.WriteString("SELECT * FROM " + schema + ".")
	b.WriteString(c.Func.Name)
	b.WriteByte('(')
	for i, a := range c.Args {
		if i > 0 {
			b.WriteString(", ")
		}
		t := c.Func.Args[i].Type
		switch a.Kind {
		case ArgConst:
			writeLiteral(&b, a.Text)
			b.WriteString("::" + t.String())
		case ArgNull:
			b.WriteString("NULL::" + t.String())
		case ArgParam:
			b.WriteString("$" + itoa(int64(a.Param)) + "::" + t.String())
		case ArgNow:
			b.WriteString("NOW()")
			if a.Text != "" {
				if a.Negative {
					b.WriteString(" - INTERVAL ")
				} else {
					b.WriteString(" + INTERVAL ")
				}
				writeLiteral(&b, a.Text)
			}
		case ArgEpoch:
			b.WriteString("to_timestamp(" + a.Text + ")")
		}
	}
	b.WriteByte(')')
	return b.String()
}

// writeLiteral writes s as a standard-conforming string literal.
func writeLiteral(b *strings.Builder, s string) {
	b.WriteByte('\'')
	b.WriteString(strings.ReplaceAll(s, "'", "''"))
	b.WriteByte('\'')
}
