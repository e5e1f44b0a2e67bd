package rewrite

import "strings"

// resolve picks the overload of fetchq.<name> that Postgres would call for
// arguments of the given types, following func_get_detail and
// func_select_candidate (src/backend/parser/parse_func.c), described in
// https://www.postgresql.org/docs/current/typeconv-func.html:
//
//  1. candidates are the overloads with as many parameters as arguments;
//  2. an overload whose parameter types equal the argument types wins;
//  3. otherwise keep the overloads every argument can be implicitly
//     coerced to (an untyped literal or $n coerces to anything); one left
//     wins, none is "does not exist";
//  4. then keep those with the most exact type matches; then those with
//     the most exact-or-preferred matches;
//  5. then, for each untyped argument, choose a type category: string if
//     any candidate takes a string there, else the category all candidates
//     agree on; drop candidates of another category (or not preferred when
//     one is); if the categories conflict, give up;
//  6. last, if all typed arguments have the same type, assume the untyped
//     ones do too and look for a unique coercible candidate.
//
// If more than one candidate survives, the call is ambiguous.
func resolve(name string, types []Type) (*Function, *Error) {
	var cands []*Function
	for _, f := range Lookup(name) {
		if len(f.Args) == len(types) {
			cands = append(cands, f)
		}
	}
	for _, f := range cands {
		if sameTypes(f, types) {
			return f, nil
		}
	}
	var ok []*Function
	for _, f := range cands {
		if coercibleTo(f, types) {
			ok = append(ok, f)
		}
	}
	switch len(ok) {
	case 0:
		return nil, &Error{
			Code:    "42883",
			Message: "function " + signature(name, types) + " does not exist",
			Hint:    "No function matches the given name and argument types. You might need to add explicit type casts.",
		}
	case 1:
		return ok[0], nil
	}
	if f := selectCandidate(types, ok); f != nil {
		return f, nil
	}
	return nil, &Error{
		Code:    "42725",
		Message: "function " + signature(name, types) + " is not unique",
		Hint:    "Could not choose a best candidate function. You might need to add explicit type casts.",
	}
}

func sameTypes(f *Function, types []Type) bool {
	for i, p := range f.Args {
		if p.Type != types[i] {
			return false
		}
	}
	return true
}

func coercibleTo(f *Function, types []Type) bool {
	for i, p := range f.Args {
		if !implicitlyCoercible(types[i], p.Type) {
			return false
		}
	}
	return true
}

// signature formats fetchq.name(type, type) as Postgres' error messages do.
func signature(name string, types []Type) string {
	var b strings.Builder
	b.WriteString(schema + "." + name + "(")
	for i, t := range types {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(t.pgName())
	}
	b.WriteByte(')')
	return b.String()
}

// selectCandidate is func_select_candidate: steps 4 to 6 above. It returns
// nil when no single candidate can be chosen.
func selectCandidate(types []Type, cands []*Function) *Function {
	nargs := len(types)
	nunknowns := 0
	for _, t := range types {
		if t == typeUnknown {
			nunknowns++
		}
	}

	// Most exact matches; keep all if none match.
	cands = keepBest(cands, func(f *Function) int {
		n := 0
		for i, t := range types {
			if t != typeUnknown && f.Args[i].Type == t {
				n++
			}
		}
		return n
	})
	if len(cands) == 1 {
		return cands[0]
	}

	// Most exact-or-preferred matches, the preferred type being of the
	// argument's own category.
	cands = keepBest(cands, func(f *Function) int {
		n := 0
		for i, t := range types {
			if t == typeUnknown {
				continue
			}
			argCat, _ := t.category()
			pc, pref := f.Args[i].Type.category()
			if f.Args[i].Type == t || (pref && pc == argCat) {
				n++
			}
		}
		return n
	})
	if len(cands) == 1 {
		return cands[0]
	}

	if nunknowns == 0 {
		return nil
	}

	// Choose a category for every unknown position.
	slotCat := make([]byte, nargs)
	slotPref := make([]bool, nargs)
	resolved := true
	for i, t := range types {
		if t != typeUnknown {
			continue
		}
		conflict := false
		for j, f := range cands {
			cat, pref := f.Args[i].Type.category()
			switch {
			case j == 0:
				slotCat[i], slotPref[i] = cat, pref
			case cat == slotCat[i]:
				slotPref[i] = slotPref[i] || pref
			case cat == catString:
				// String always wins if available.
				slotCat[i], slotPref[i] = cat, pref
			default:
				conflict = true
			}
		}
		if conflict && slotCat[i] != catString {
			resolved = false
			break
		}
	}
	if resolved {
		var kept []*Function
		for _, f := range cands {
			keep := true
			for i, t := range types {
				if t != typeUnknown {
					continue
				}
				cat, pref := f.Args[i].Type.category()
				if cat != slotCat[i] || (slotPref[i] && !pref) {
					keep = false
					break
				}
			}
			if keep {
				kept = append(kept, f)
			}
		}
		if len(kept) > 0 {
			cands = kept
		}
		if len(cands) == 1 {
			return cands[0]
		}
	}

	// Last gasp: all known inputs of one type; assume the unknowns are of
	// that type too.
	if nunknowns < nargs {
		known := Type(0)
		for _, t := range types {
			if t == typeUnknown {
				continue
			}
			if known == 0 {
				known = t
			} else if known != t {
				known = 0
				break
			}
		}
		if known != 0 {
			same := make([]Type, nargs)
			for i := range same {
				same[i] = known
			}
			var match *Function
			n := 0
			for _, f := range cands {
				if coercibleTo(f, same) {
					n++
					match = f
				}
			}
			if n == 1 {
				return match
			}
		}
	}
	return nil
}

// keepBest keeps the candidates with the highest score, in order.
func keepBest(cands []*Function, score func(*Function) int) []*Function {
	best := -1
	var out []*Function
	for _, f := range cands {
		switch s := score(f); {
		case s > best:
			best = s
			out = append(out[:0:0], f)
		case s == best:
			out = append(out, f)
		}
	}
	return out
}
