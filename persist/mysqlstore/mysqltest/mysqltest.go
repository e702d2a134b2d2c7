// Package mysqltest gives each test a throwaway database on the real MySQL
// (MariaDB) server named by FLASHSALE_TEST_MYSQL: never a mock of it.
package mysqltest

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/go-sql-driver/mysql"
)

// DefaultDSN is the project's test user on the local server, as .ci/run
// creates it.
const DefaultDSN = "flashsale:flashsale@tcp(127.0.0.1:3306)/flashsale_test"

// DSN creates a database of its own for t (flashsale_test_<random>), drops
// it when t ends, and returns its DSN. Without a server the test skips,
// except in CI, where it fails.
func DSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv("FLASHSALE_TEST_MYSQL")
	if base == "" {
		base = DefaultDSN
	}
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatalf("FLASHSALE_TEST_MYSQL: %v", err)
	}
	name := fmt.Sprintf("flashsale_test_%d", rand.Uint32())
	admin, err := sql.Open("mysql", base)
	if err == nil {
		_, err = admin.Exec("CREATE DATABASE " + name)
	}
	if err != nil {
		if admin != nil {
			admin.Close()
		}
		if os.Getenv("CI") != "" {
			t.Fatalf("MySQL at %s: %v (.ci/run sets it up)", cfg.Addr, err)
		}
		t.Skipf("no MySQL test database at %s: %v (see .ci/run for the setup)", cfg.Addr, err)
	}
	t.Cleanup(func() {
		admin.Exec("DROP DATABASE " + name)
		admin.Close()
	})
	cfg.DBName = name
	return cfg.FormatDSN()
}
