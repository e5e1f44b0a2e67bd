package pgtest_test

import (
	"testing"

	"github.com/fetchq/fetchq-proxy/internal/pgtest"
)

// scramRole may only log in with its password: the HBA line below comes
// before pgtest's trust line.
const scramRole = "pgtest_scram"

func TestMain(m *testing.M) {
	pgtest.MainWith(m, pgtest.Options{
		Settings: map[string]string{"max_connections": "150"},
		HBA:      []string{"local all " + scramRole + " scram-sha-256"},
		TemplateSQL: []string{
			"CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)",
			"INSERT INTO notes VALUES (0, 'from the template'); CREATE INDEX ON notes (body)",
		},
	})
}
