package pgtest

import (
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

func TestKeywordValue(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"host=/tmp port=5432 user=postgres":                          "host=/tmp port=5432 user=postgres",
		"postgres://u:p%20w@db.example:6000/my%20db?sslmode=disable": "user=u password='p w' host=db.example port=6000 dbname='my db' sslmode=disable",
		"postgresql://u@h1,h2:5433/d":                                "user=u host=h1,h2 port=5432,5433 dbname=d",
		"postgres:///d?host=/var/run/postgresql&user=x":              "dbname=d host=/var/run/postgresql user=x",
		"postgres://u@[::1]:7000/d":                                  "user=u host=::1 port=7000 dbname=d",
	} {
		got, err := keywordValue(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)

		// Same meaning as the original.
		a, err := pgconn.ParseConfig(in)
		require.NoError(t, err, in)
		b, err := pgconn.ParseConfig(got)
		require.NoError(t, err, got)
		require.Equal(t, []any{a.Host, a.Port, a.User, a.Password, a.Database}, []any{b.Host, b.Port, b.User, b.Password, b.Database}, in)
	}
}
