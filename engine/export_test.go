package engine

import "time"

// Hooks for the black-box tests (package engine_test): the janitor's steps,
// run at once instead of on its ticker.

// SweepIdempotency drops the request ids past the window at now.
func (e *Engine) SweepIdempotency(now time.Time) { e.idem.sweep(now) }

// RefreshPools reads what each item's pool has left.
func (e *Engine) RefreshPools() { e.refreshPools() }

// ReturnIdleLeases gives back idle leases (and trims unsure ones) at now.
func (e *Engine) ReturnIdleLeases(now time.Time) { e.returnIdleLeases(now) }
