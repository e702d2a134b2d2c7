// Command flashsale is an edge server for flash sales: it decides in memory
// who wins, never sells a unit twice and never loses an order it said yes
// to. It parses its flags into a node.Config, builds an edge node or a
// writer (package node), serves, waits for SIGTERM and stops in reverse.
// See README.md; the HTTP contract is docs/api.md, the design docs/design.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/bytedance/sonic"

	"github.com/flashsale/flashsale/internal/memlimit"
	"github.com/flashsale/flashsale/node"
)

// version is stamped by the Makefile with -ldflags -X.
var version = "dev"

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	cmd, err := parseFlags(args, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		slog.Error("invalid command line", "err", err)
		return 2
	case cmd.version:
		fmt.Println("flashsale", version)
		return 0
	}
	cfg := cmd.cfg
	if err := errors.Join(cmd.invalid, cfg.Validate()); err != nil {
		slog.Error("invalid configuration", "err", err)
		return 1
	}
	if cmd.checkConfig {
		fmt.Println("configuration is valid")
		return 0
	}
	limit, from := memoryLimit(cmd.memoryLimit)
	slog.Info("starting flashsale", "version", version, "mode", cfg.Mode(), "gomaxprocs", runtime.GOMAXPROCS(0), "sonic_api", sonic.APIKind,
		"memory_limit", limit, "memory_limit_from", from)
	if sonic.APIKind != sonic.UseSonicJSON {
		slog.Warn("sonic runs in its encoding/json fallback on this platform: JSON is slower")
	}
	if cfg.Role == node.RoleWriter {
		return runWriter(cfg)
	}
	return runEdge(cfg)
}

// memoryLimit sets the runtime's soft memory limit: -memory-limit's, else
// GOMEMLIMIT's (the runtime read it), else nine tenths of the memory
// available (memlimit). It returns the limit in force and where it came
// from.
func memoryLimit(flagged int64) (int64, string) {
	switch {
	case flagged == -1:
		debug.SetMemoryLimit(math.MaxInt64)
		return 0, "-memory-limit off"
	case flagged > 0:
		debug.SetMemoryLimit(flagged)
		return flagged, "-memory-limit"
	case os.Getenv("GOMEMLIMIT") != "":
		return debug.SetMemoryLimit(-1), "GOMEMLIMIT"
	}
	avail, from := memlimit.Available("/")
	if avail <= 0 {
		return 0, "none (the memory available cannot be read)"
	}
	limit := int64(float64(avail) * memlimit.Share)
	debug.SetMemoryLimit(limit)
	return limit, "nine tenths of " + from
}

func runEdge(cfg node.Config) int {
	e, err := node.NewEdge(context.Background(), cfg)
	if err != nil {
		slog.Error("cannot start the edge node", "err", err)
		return 1
	}
	pub, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		slog.Error("cannot listen on -listen", "err", err)
		e.Stop()
		return 1
	}
	adm, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		slog.Error("cannot listen on -admin-listen", "err", err)
		pub.Close()
		e.Stop()
		return 1
	}
	served := make(chan error, 1)
	go func() { served <- e.Serve(pub, adm) }()
	greet(pub.Addr().String(), adm.Addr().String())
	code := wait(cfg.Server.ShutdownDelay, served, e.Lost())
	e.Stop()
	slog.Info("bye")
	return code
}

func runWriter(cfg node.Config) int {
	w, err := node.NewWriter(context.Background(), cfg)
	if err != nil {
		slog.Error("cannot start the writer", "err", err)
		return 1
	}
	adm, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		slog.Error("cannot listen on -admin-listen", "err", err)
		w.Stop()
		return 1
	}
	served := make(chan error, 1)
	go func() { served <- w.Serve(adm) }()
	code := wait(0, served, nil)
	w.Stop()
	slog.Info("bye")
	return code
}

// wait blocks until SIGTERM or SIGINT, a failure of serving, or the loss of
// the node's registration in Redis, and says the exit status.
func wait(shutdownDelay time.Duration, served <-chan error, lost <-chan struct{}) int {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		slog.Info("shutting down", "signal", s.String(), "shutdown_delay", shutdownDelay)
		return 0
	case err := <-served:
		slog.Error("serving failed", "err", err)
		return 1
	case <-lost:
		slog.Error("this node lost its registration in Redis (missed heartbeats); stopping, since others may give its leases back")
		return 0
	}
}
