// Package memlimit sizes the Go runtime's soft memory limit (GOMEMLIMIT)
// for the command's -memory-limit: a size given, or by default nine tenths
// of what the process may use, the container's memory limit (cgroup v2 or
// v1) or else the machine's memory. Near its limit the collector works
// harder instead of letting the heap grow into an out-of-memory kill.
package memlimit

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Share is the part of the available memory the default limit takes: the
// rest is for what the Go heap does not count (stacks in flight, cgo, the
// kernel's buffers of this process).
const Share = 0.9

// Available says how much memory the process may use and from where:
// the cgroup's limit under root (normally "/"), else the machine's total.
// 0 when neither can be read.
func Available(root string) (int64, string) {
	if b, err := os.ReadFile(filepath.Join(root, "sys/fs/cgroup/memory.max")); err == nil { // cgroup v2
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			return n, "cgroup memory.max"
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, "sys/fs/cgroup/memory/memory.limit_in_bytes")); err == nil { // cgroup v1
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n < 1<<60 {
			return n, "cgroup memory.limit_in_bytes"
		}
	}
	if f, err := os.Open(filepath.Join(root, "proc/meminfo")); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("MemTotal:")); ok {
				fields := strings.Fields(string(rest))
				if n, err := strconv.ParseInt(fields[0], 10, 64); err == nil && len(fields) == 2 && fields[1] == "kB" {
					return n << 10, "the machine's memory"
				}
			}
		}
	}
	return 0, ""
}

// Parse reads a size: bytes, or a number with KiB, MiB, GiB (or KB, MB,
// GB: powers of ten), e.g. "1536MiB"; "off" is no limit (-1).
func Parse(s string) (int64, error) {
	if s == "off" {
		return -1, nil
	}
	units := []struct {
		suffix string
		mult   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}, {"", 1}}
	for _, u := range units {
		num, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
		if err != nil || f <= 0 {
			break
		}
		return int64(f * u.mult), nil
	}
	return 0, fmt.Errorf("memlimit: %q is no size (like 1536MiB, 2GiB, or off)", s)
}
