// Package spawn starts a flashsale binary on loopback ports chosen by the
// kernel and a data directory, for the load generator's -spawn and for the
// end-to-end tests: it waits until the server says it is serving and reads
// the addresses from that line (an edge node), or until /readyz answers (a
// writer). It never chooses the server's flags beyond
// the listeners and the data directory: the caller passes the rest.
package spawn

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"time"
)

// Proc is a running flashsale.
type Proc struct {
	Cmd    *exec.Cmd
	Public string // base URL of the public listener
	Admin  string // base URL of the admin listener
	// Exited receives the process's exit once it has ended.
	Exited chan error
}

var servingLine = regexp.MustCompile(`serving public=(\S+) admin=(\S+)`)

// Start runs binary with a data directory, loopback listeners and extra
// args (later flags win), and returns once it serves. Every line the
// server logs is copied to log when it is not nil.
func Start(binary, dataDir string, log io.Writer, args ...string) (*Proc, error) {
	args = append([]string{"-data-dir", dataDir, "-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0"}, args...)
	cmd := exec.Command(binary, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start %s: %w", binary, err)
	}
	p := &Proc{Cmd: cmd, Exited: make(chan error, 1)}
	addrs := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := servingLine.FindStringSubmatch(sc.Text()); m != nil {
				addrs <- m[1:]
			}
			if log != nil {
				fmt.Fprintln(log, sc.Text())
			}
		}
		p.Exited <- cmd.Wait()
	}()
	select {
	case a := <-addrs:
		p.Public, p.Admin = "http://"+a[0], "http://"+a[1]
		return p, nil
	case err := <-p.Exited:
		return nil, fmt.Errorf("%s exited before serving: %v", binary, err)
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		return nil, fmt.Errorf("%s did not serve within 20 s", binary)
	}
}

// StartWriter runs binary in the writer role (-role writer, with args) with
// its admin listener on a free loopback port, and returns once its /readyz
// answers 200. The writer serves no public listener: Public is empty.
func StartWriter(binary string, log io.Writer, args ...string) (*Proc, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	admin := l.Addr().String()
	l.Close()
	cmd := exec.Command(binary, append([]string{"-role", "writer", "-admin-listen", admin}, args...)...)
	if log != nil {
		cmd.Stderr = log
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start %s: %w", binary, err)
	}
	p := &Proc{Cmd: cmd, Admin: "http://" + admin, Exited: make(chan error, 1)}
	go func() { p.Exited <- cmd.Wait() }()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-p.Exited:
			return nil, fmt.Errorf("the writer %s exited before it was ready: %v", binary, err)
		default:
		}
		if resp, err := http.Get(p.Admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
	}
	cmd.Process.Kill()
	return nil, fmt.Errorf("the writer %s was not ready within 20 s", binary)
}

// Stop ends the process with SIGKILL and waits for it.
func (p *Proc) Stop() {
	p.Cmd.Process.Kill()
	<-p.Exited
	p.Exited <- nil // later readers see it ended
}
