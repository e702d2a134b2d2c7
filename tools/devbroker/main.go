// Command devbroker runs a single-process Kafka broker (franz-go's kfake)
// on a fixed port, keeping its data in a directory across restarts, so
// that several edge nodes and writers can share a Kafka on one machine:
//
//	go run ./tools/devbroker -listen 127.0.0.1:9092 -data-dir ./data/kafka
//
// It is for development and load tests on one machine only. Production
// points -kafka at a real Kafka cluster (three brokers or more, topics
// replicated three times, min.insync.replicas=2).
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9092", "host:port the broker listens on")
	dataDir := flag.String("data-dir", "./data/kafka", "directory that keeps topics, offsets and groups across restarts; empty keeps them in memory")
	partitions := flag.Int("default-partitions", 12, "partitions of topics created automatically")
	syncWrites := flag.Bool("sync-writes", true, "fsync every produced batch before acknowledging it (acks=all means durable)")
	flag.Parse()
	host, port, err := net.SplitHostPort(*listen)
	if err != nil {
		fail(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		fail(err)
	}
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(p), kfake.DefaultNumPartitions(*partitions),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, port))
		})}
	if *dataDir != "" {
		if err := os.MkdirAll(*dataDir, 0o755); err != nil {
			fail(err)
		}
		opts = append(opts, kfake.DataDir(*dataDir))
	}
	if *syncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		fail(err)
	}
	slog.Info("dev broker (kfake) running; not for production", "addrs", c.ListenAddrs(), "data_dir", *dataDir)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	c.Close()
	slog.Info("dev broker stopped")
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "devbroker:", err)
	os.Exit(1)
}
