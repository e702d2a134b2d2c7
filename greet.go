package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
)

// greet tells a newcomer how to use what just started. The first line is
// also what tests and the load generator read the addresses from.
func greet(pub, adm string) {
	slog.Info("serving", "public", pub, "admin", adm)
	fmt.Fprintf(os.Stderr, `
  flashsale is ready. Create an item on the admin port, then buy it:

    curl -X PUT http://%[2]s/api/v1/items/phone-1 -H 'Content-Type: application/json' \
         -d '{"name":"Phone","price_cents":19900,"stock":1000,"per_user_limit":1}'
    curl -X POST http://%[1]s/api/v1/items/phone-1/purchase -H 'Content-Type: application/json' \
         -d '{"user_id":"u-42","request_id":"r-1"}'
    curl http://%[1]s/api/v1/items/phone-1
    curl http://%[2]s/metrics

`, hostport(pub), hostport(adm))
}

// hostport makes a listen address usable in a URL (":8080" -> "localhost:8080").
func hostport(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
