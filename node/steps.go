package node

import (
	"log/slog"
	"time"
)

// step is one stop of a process, run in reverse order of start.
type step struct {
	name string
	stop func() error
}

// steps is what a process has started, in order.
type steps []step

// push records how to stop what was just started.
func (s *steps) push(name string, stop func() error) { *s = append(*s, step{name, stop}) }

// stop runs every step in reverse order, timing and logging each, and
// forgets them: a second call does nothing.
func (s *steps) stop() {
	for i := len(*s) - 1; i >= 0; i-- {
		st := (*s)[i]
		t := time.Now()
		if err := st.stop(); err != nil {
			slog.Error("stopping "+st.name, "err", err, "took", time.Since(t))
			continue
		}
		slog.Info("stopped "+st.name, "took", time.Since(t))
	}
	*s = nil
}
