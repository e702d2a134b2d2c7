package codes

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Redemption is a code redeemed: by whom, when, and what it was worth.
type Redemption struct {
	Code       string // as made (canonical)
	Batch      string
	Number     uint32
	Serial     uint32
	ValueCents int64
	UserID     string
	At         time.Time
}

// Store keeps batches and redemptions durably: the embedded store
// standalone; Redis (which decides across nodes) and the order database in
// a cluster.
type Store interface {
	// CreateBatch records b under its name with the next free number, and
	// returns it; when the name exists it returns that batch and false.
	CreateBatch(ctx context.Context, b Batch) (Batch, bool, error)
	// Redeem records r durably unless its code was redeemed before, and
	// returns the code's first redemption (r when r won).
	Redeem(ctx context.Context, r *Redemption) (*Redemption, error)
}

// BatchFinder is a Store that can read one batch: a node of a cluster
// learns a batch another node created when a genuine code of it comes (the
// signature is checked first, so a forged code never reaches the store).
type BatchFinder interface {
	FindBatch(ctx context.Context, number uint32) (Batch, bool, error)
}

// Errors of a Desk, besides ErrInvalid and ErrExpired.
var (
	// ErrUsed: another user redeemed the code.
	ErrUsed = errors.New("codes: the code was redeemed by someone else")
	// ErrInProgress: the same code is being redeemed by this user right now
	// (another user waits for that outcome, and gets ErrUsed).
	ErrInProgress = errors.New("codes: the code is being redeemed")
	// ErrBatchExists: a batch of that name exists, with other settings.
	ErrBatchExists = errors.New("codes: a batch of that name exists with other settings")
	// ErrUnavailable wraps the store's failure: nothing was recorded.
	ErrUnavailable = errors.New("codes: the code store is unavailable")
	// ErrNoKeys: no secret is configured.
	ErrNoKeys = errors.New("codes: no secret is configured (-codes-secret-file)")
)

// Desk redeems codes: it checks a code in memory (signature, expiry, a batch
// it knows, a serial within the batch), answers a code it knows redeemed
// from memory, and asks the store to record a new redemption. One desk per
// process; its memory holds the batches and the redemptions it has seen.
type Desk struct {
	keys  *Keyring // nil: no codes
	store Store
	now   func() time.Time

	mu       sync.Mutex
	batches  map[uint32]Batch
	redeemed map[uint64]*Redemption // by batch<<32 | serial
	inflight map[uint64]*attempt    // a redemption being recorded
}

// attempt is a redemption being recorded: others wait for it.
type attempt struct {
	user string
	done chan struct{} // closed once recorded (redeemed has it) or failed
}

// NewDesk returns a desk that knows batches and redemptions (from the
// store, at start). keys may be nil: every code is then refused
// (ErrNoKeys).
func NewDesk(keys *Keyring, store Store, batches []Batch, redeemed []*Redemption, now func() time.Time) *Desk {
	if now == nil {
		now = time.Now
	}
	d := &Desk{keys: keys, store: store, now: now, batches: map[uint32]Batch{}, redeemed: map[uint64]*Redemption{},
		inflight: map[uint64]*attempt{}}
	for _, b := range batches {
		d.batches[b.Number] = b
	}
	for _, r := range redeemed {
		d.redeemed[slot(r.Number, r.Serial)] = r
	}
	return d
}

func slot(batch, serial uint32) uint64 { return uint64(batch)<<32 | uint64(serial) }

// Learn tells the desk of a batch created, or a redemption made, elsewhere
// (another node of a cluster).
func (d *Desk) Learn(b *Batch, r *Redemption) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if b != nil {
		d.batches[b.Number] = *b
	}
	if r != nil {
		d.redeemed[slot(r.Number, r.Serial)] = r
	}
}

// Check judges a code from memory alone: ErrNoKeys, ErrInvalid (not a code,
// or not of a batch this desk knows, or past its count), ErrExpired, or the
// code and its batch. It allocates nothing.
func (d *Desk) Check(code string) (Code, Batch, error) {
	if d.keys == nil {
		return Code{}, Batch{}, ErrNoKeys
	}
	c, err := d.keys.Check(code, d.now())
	if err != nil {
		return c, Batch{}, err
	}
	d.mu.Lock()
	b, ok := d.batches[c.Batch]
	d.mu.Unlock()
	if !ok {
		return c, Batch{}, errUnknownBatch
	}
	if !b.issued(c) {
		return c, Batch{}, ErrInvalid
	}
	return c, b, nil
}

// issued reports whether c is one of b's codes: its serial, key and expiry
// (a genuine code made for the batch's number with another expiry, by
// tools/codes given the wrong one, is not).
func (b Batch) issued(c Code) bool {
	return int(c.Serial) < b.Count && b.Key == c.Key && c.Expires.Equal(b.Expires)
}

// errUnknownBatch is ErrInvalid for a genuine code of a batch this desk
// does not know (yet: another node may have made it).
var errUnknownBatch = fmt.Errorf("%w: unknown batch", ErrInvalid)

// find looks for a genuine code's batch in the store, when it can.
func (d *Desk) find(ctx context.Context, c Code) (Code, Batch, error) {
	f, ok := d.store.(BatchFinder)
	if !ok {
		return c, Batch{}, ErrInvalid
	}
	b, ok, err := f.FindBatch(ctx, c.Batch)
	switch {
	case err != nil:
		return c, Batch{}, fmt.Errorf("%w: cannot read the batch: %w", ErrUnavailable, err)
	case !ok || !b.issued(c):
		return c, Batch{}, ErrInvalid
	}
	d.Learn(&b, nil)
	return c, b, nil
}

// Redeem redeems code for user: the redemption and whether it is a replay
// (the same user redeemed it before: the first answer again); ErrUsed when
// another user did; the errors of Check; or the store's failure (nothing
// was recorded; the client may retry).
func (d *Desk) Redeem(ctx context.Context, code, user string) (*Redemption, bool, error) {
	c, b, err := d.Check(code)
	if errors.Is(err, errUnknownBatch) {
		c, b, err = d.find(ctx, c)
	}
	if err != nil {
		return nil, false, err
	}
	key := slot(c.Batch, c.Serial)
	d.mu.Lock()
	for {
		if first := d.redeemed[key]; first != nil {
			d.mu.Unlock()
			return answer(first, user)
		}
		a := d.inflight[key]
		if a == nil {
			break
		}
		if a.user == user { // the same request twice at once
			d.mu.Unlock()
			return nil, false, ErrInProgress
		}
		d.mu.Unlock() // another user's: wait for its outcome (code_used, or this one's turn)
		select {
		case <-a.done:
		case <-ctx.Done():
			return nil, false, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		}
		d.mu.Lock()
	}
	user = strings.Clone(user) // kept: it may alias a request's buffer
	a := &attempt{user: user, done: make(chan struct{})}
	d.inflight[key] = a
	d.mu.Unlock()
	text, _ := d.keys.Make(nil, c) // the canonical text
	r := &Redemption{Code: string(text), Batch: b.Name, Number: b.Number, Serial: c.Serial, ValueCents: b.ValueCents,
		UserID: user, At: d.now().UTC().Truncate(time.Millisecond)}
	first, err := d.store.Redeem(ctx, r)
	d.mu.Lock()
	delete(d.inflight, key)
	if err == nil {
		d.redeemed[key] = first
	}
	d.mu.Unlock()
	close(a.done)
	if err != nil {
		return nil, false, fmt.Errorf("%w: cannot record the redemption: %w", ErrUnavailable, err)
	}
	if first != r {
		return answer(first, user)
	}
	return r, false, nil
}

// answer is the answer to user for a code first redeemed as first.
func answer(first *Redemption, user string) (*Redemption, bool, error) {
	if first.UserID != user {
		return nil, false, ErrUsed
	}
	return first, true, nil
}

// CreateBatch creates batch name (or finds it, when it exists with the same
// count, value and expiry: then created is false and the codes are the
// same) and returns it with its codes. The expiry is kept to the minute.
func (d *Desk) CreateBatch(ctx context.Context, name string, count int, valueCents int64, expires time.Time) (Batch, []string, bool, error) {
	if d.keys == nil {
		return Batch{}, nil, false, ErrNoKeys
	}
	if count < 1 || count > MaxCount || valueCents < 0 {
		return Batch{}, nil, false, errors.New("codes: count must be 1 to 100,000 and value_cents not negative")
	}
	if !expires.IsZero() {
		expires = expires.UTC().Truncate(time.Minute)
		if !expires.After(d.now()) || expires.After(Latest) {
			return Batch{}, nil, false, errors.New("codes: expires_at must be in the future (and before " + Latest.Format(time.RFC3339) + ")")
		}
	}
	want := Batch{Name: name, Key: d.keys.Newest(), Count: count, ValueCents: valueCents, Expires: expires}
	b, created, err := d.store.CreateBatch(ctx, want)
	if err != nil {
		return Batch{}, nil, false, fmt.Errorf("%w: cannot record the batch: %w", ErrUnavailable, err)
	}
	if !created && (b.Count != want.Count || b.ValueCents != want.ValueCents || !b.Expires.Equal(want.Expires)) {
		return b, nil, false, ErrBatchExists
	}
	list, err := d.keys.Codes(b)
	if err != nil {
		return Batch{}, nil, false, err
	}
	d.Learn(&b, nil)
	return b, list, created, nil
}
