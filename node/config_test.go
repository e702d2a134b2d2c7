package node

import "testing"

func TestAdminListenerOffLoopbackNeedsAToken(t *testing.T) {
	if err := checkAdminAddr("0.0.0.0:6060", ""); err == nil {
		t.Fatal("admin off loopback without a token accepted")
	}
	for _, ok := range [][2]string{{"127.0.0.1:6060", ""}, {"[::1]:6060", ""}, {"localhost:6060", ""}, {":6060", "t"}} {
		if err := checkAdminAddr(ok[0], ok[1]); err != nil {
			t.Fatal(err)
		}
	}
}

// The defaults make a valid standalone edge node, and Validate checks the
// values as given: a zero that means nothing is an error.
func TestDefaultConfigIsValidAndZeroIsNot(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("the defaults: %v", err)
	}
	f := func(name string, edit func(*Config)) {
		t.Helper()
		cfg := DefaultConfig()
		edit(&cfg)
		if cfg.Validate() == nil {
			t.Fatalf("%s: accepted", name)
		}
	}
	f("no data directory", func(c *Config) { c.Store.Dir = "" })
	f("no idempotency window", func(c *Config) { c.Engine.IdempotencyWindow = 0 })
	f("no read timeout", func(c *Config) { c.Server.ReadTimeout = 0 })
	f("no order tables", func(c *Config) { c.MySQL.Tables = 0 })
	f("no writer batch", func(c *Config) { c.Writer.MaxBatch = 0 })
	f("no breaker failures", func(c *Config) { c.Breaker.Failures = 0 })
	f("a short node ttl", func(c *Config) { c.NodeTTL = 1 })
	f("a writer without Kafka", func(c *Config) { c.Role = RoleWriter })
	f("an unknown role", func(c *Config) { c.Role = "reader" })
}
