// Package mysqltest gives each test, or each benchmark run, a throwaway
// database on the real MySQL (MariaDB) server named by FLASHSALE_TEST_MYSQL:
// never a mock of it. It does not import package testing (TB is the part of
// testing.TB it uses), so that a benchmark command may use Create without
// linking the test framework.
package mysqltest

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"

	"github.com/go-sql-driver/mysql"
)

// TB is the part of testing.TB that DSN uses.
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
}

// DefaultDSN is the project's test user on the local server, as .ci/run
// creates it.
const DefaultDSN = "flashsale:flashsale@tcp(127.0.0.1:3306)/flashsale_test"

// DSN creates a database of its own for t (flashsale_test_<random>), drops
// it when t ends, and returns its DSN. Without a server the test skips,
// except in CI, where it fails.
func DSN(t TB) string {
	t.Helper()
	base := os.Getenv("FLASHSALE_TEST_MYSQL")
	if base == "" {
		base = DefaultDSN
	}
	dsn, drop, err := Create(base)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v (.ci/run sets it up)", err)
		}
		t.Skipf("%v (see .ci/run for the setup)", err)
	}
	t.Cleanup(drop)
	return dsn
}

// Create makes a throwaway database (flashsale_test_<random>) on base's
// server, as base's user, and returns its DSN and a function that drops it.
func Create(base string) (dsn string, drop func(), err error) {
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		return "", nil, fmt.Errorf("bad MySQL DSN: %w", err)
	}
	admin, err := sql.Open("mysql", base)
	if err != nil {
		return "", nil, err
	}
	name := fmt.Sprintf("flashsale_test_%d", rand.Uint32())
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("no MySQL test database at %s: %w", cfg.Addr, err)
	}
	cfg.DBName = name
	return cfg.FormatDSN(), func() { admin.Exec("DROP DATABASE " + name); admin.Close() }, nil
}
