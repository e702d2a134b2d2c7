package memlimit

import (
	"os"
	"path/filepath"
	"testing"
)

func TestAvailable(t *testing.T) {
	write := func(root, path, content string) {
		p := filepath.Join(root, path)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v2 := t.TempDir()
	write(v2, "sys/fs/cgroup/memory.max", "536870912\n")
	write(v2, "proc/meminfo", "MemTotal:       24576000 kB\n")
	if n, from := Available(v2); n != 512<<20 || from != "cgroup memory.max" {
		t.Fatalf("cgroup v2: %d %q", n, from)
	}
	unlimited := t.TempDir()
	write(unlimited, "sys/fs/cgroup/memory.max", "max\n")
	write(unlimited, "proc/meminfo", "MemFree: 1 kB\nMemTotal:       24576000 kB\n")
	if n, from := Available(unlimited); n != 24576000<<10 || from != "the machine's memory" {
		t.Fatalf("no container limit: %d %q", n, from)
	}
	v1 := t.TempDir()
	write(v1, "sys/fs/cgroup/memory/memory.limit_in_bytes", "1073741824\n")
	if n, _ := Available(v1); n != 1<<30 {
		t.Fatalf("cgroup v1: %d", n)
	}
	if n, _ := Available(t.TempDir()); n != 0 {
		t.Fatalf("nothing readable: %d", n)
	}
}

func TestParse(t *testing.T) {
	for in, want := range map[string]int64{"1536MiB": 1536 << 20, "2GiB": 2 << 30, "1GB": 1e9, "4096": 4096, "off": -1, "0.5GiB": 1 << 29} {
		if got, err := Parse(in); err != nil || got != want {
			t.Fatalf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "lots", "-1GiB", "0", "12XB"} {
		if _, err := Parse(bad); err == nil {
			t.Fatalf("%q was taken", bad)
		}
	}
}
