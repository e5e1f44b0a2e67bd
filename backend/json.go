package backend

import (
	"encoding/json"
	"strings"
)

// DedoubleQuotes replaces each pair of consecutive single quotes in a JSON
// argument's text with one single quote, scanning left to right (so three
// quotes become two, four become two). A lone single quote is kept.
//
// Why: Fetchq 4.0.2 prints jsonb payload and details arguments into dynamic
// SQL between single quotes without escaping, so Postgres parses them a
// second time as string literals. The Node client compensates by writing each
// ' of a JSON value as four quotes inside its SQL literal, so the function
// receives it with the quote doubled and the extension stores it's. Applying this
// de-doubling once before storing reproduces what the extension stores for
// every input it accepts. Unlike 4.0.2 (where a lone quote breaks the
// statement), a lone quote is stored as it is, so clients that escape the
// ordinary way (psycopg, JDBC, pgx parameters) also store it's. The one
// value that cannot round-trip is a JSON string holding two consecutive
// single quotes: it is stored with one (spec §4.3).
func DedoubleQuotes(s string) string {
	if !strings.Contains(s, "''") {
		return s
	}
	return strings.ReplaceAll(s, "''", "'")
}

// checkJSON returns Postgres' 22P02 error if s is not JSON text.
func checkJSON(s string) error {
	if json.Valid([]byte(s)) {
		return nil
	}
	var v any
	err := json.Unmarshal([]byte(s), &v)
	detail := ""
	if err != nil {
		detail = err.Error()
	}
	return errInvalidJSON(detail)
}

// jsonArg validates a jsonb argument and returns the text to store.
func jsonArg(s string) (string, error) {
	if err := checkJSON(s); err != nil {
		return "", err
	}
	return DedoubleQuotes(s), nil
}
