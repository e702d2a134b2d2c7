// Package storecand benchmarks candidate durable order stores against the
// project's store (persist/localstore; "store") with one workload: N
// concurrent appenders, each Append returning only after the fsync/fdatasync
// that covers its order.
package storecand

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/cockroachdb/pebble/v2"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/persist/localstore"
)

// Store is what every candidate offers the benchmark.
type Store interface {
	Append(ctx context.Context, o *engine.Order) error
	Close() error
}

// Candidates by name, each opened in a fresh directory.
var Candidates = map[string]func(dir string) (Store, error){
	"null":  func(string) (Store, error) { return nullStore{}, nil },
	"store": func(dir string) (Store, error) { return localstore.Open(localstore.Options{Dir: dir}) },
	"pebble-gc": func(dir string) (Store, error) {
		return OpenPebbleGC(dir)
	},
	"pebble-apply": func(dir string) (Store, error) {
		return OpenPebbleApply(dir)
	},
	"log":        func(dir string) (Store, error) { return OpenLog(dir, LogGrow) },
	"log-falloc": func(dir string) (Store, error) { return OpenLog(dir, LogFallocate) },
	"log-zeroed": func(dir string) (Store, error) { return OpenLog(dir, LogZeroed) },
}

// nullStore returns at once: the harness's own cost (order building, goroutines).
type nullStore struct{}

func (nullStore) Append(context.Context, *engine.Order) error { return nil }
func (nullStore) Close() error                                { return nil }

// ---------------------------------------------------------------------------
// Encoding shared by the pebble and log candidates.

// EncodeOrder appends a compact binary form of o to dst.
func EncodeOrder(dst []byte, o *engine.Order) []byte {
	dst = binary.BigEndian.AppendUint64(dst, o.ID)
	dst = appendString(dst, o.ItemID)
	dst = appendString(dst, o.UserID)
	dst = binary.AppendVarint(dst, o.Quantity)
	dst = binary.AppendVarint(dst, o.PriceCents)
	dst = appendString(dst, o.RequestID)
	dst = binary.AppendVarint(dst, o.CreatedAt.UnixMilli())
	return dst
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// DecodeOrder is EncodeOrder's inverse (ID, strings, numbers; CreatedAt as ms).
func DecodeOrder(b []byte) (id uint64, item, user string, qty, price int64, req string, ms int64, err error) {
	if len(b) < 8 {
		return 0, "", "", 0, 0, "", 0, errors.New("short order")
	}
	id, b = binary.BigEndian.Uint64(b), b[8:]
	str := func() string {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			err = errors.New("bad string")
			return ""
		}
		s := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return s
	}
	num := func() int64 {
		v, k := binary.Varint(b)
		if k <= 0 {
			err = errors.New("bad number")
			return 0
		}
		b = b[k:]
		return v
	}
	item, user = str(), str()
	qty, price = num(), num()
	req = str()
	ms = num()
	return
}

// ---------------------------------------------------------------------------
// Group commit machinery shared by pebble-gc and log: Append joins the open
// batch and waits; one writer goroutine takes the whole batch and makes it
// durable with one sync. Same shape as localstore's.

type gcBatch struct {
	orders []*engine.Order
	done   chan struct{}
	err    error
}

type groupCommitter struct {
	mu       sync.Mutex
	open     *gcBatch
	closing  bool
	wake     chan struct{}
	finished chan struct{}
	maxBatch int
	sealed   []*gcBatch
	commit   func([]*engine.Order) error // run by the writer goroutine only
}

func newGroupCommitter(maxBatch int, commit func([]*engine.Order) error) *groupCommitter {
	g := &groupCommitter{open: &gcBatch{done: make(chan struct{})}, wake: make(chan struct{}, 1),
		finished: make(chan struct{}), maxBatch: maxBatch, commit: commit}
	go g.writer()
	return g
}

var errClosed = errors.New("store is closed")

func (g *groupCommitter) Append(_ context.Context, o *engine.Order) error {
	g.mu.Lock()
	if g.closing {
		g.mu.Unlock()
		return errClosed
	}
	b := g.open
	b.orders = append(b.orders, o)
	if len(b.orders) >= g.maxBatch {
		g.sealed = append(g.sealed, b)
		g.open = &gcBatch{done: make(chan struct{})}
	}
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	<-b.done
	return b.err
}

func (g *groupCommitter) take() (*gcBatch, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var b *gcBatch
	switch {
	case len(g.sealed) > 0:
		b = g.sealed[0]
		g.sealed[0] = nil
		g.sealed = g.sealed[1:]
	case len(g.open.orders) > 0:
		b = g.open
		g.open = &gcBatch{done: make(chan struct{})}
	}
	return b, g.closing
}

func (g *groupCommitter) writer() {
	defer close(g.finished)
	for range g.wake {
		for {
			b, closing := g.take()
			if b == nil {
				if closing {
					return
				}
				break
			}
			b.err = g.commit(b.orders)
			close(b.done)
		}
	}
}

func (g *groupCommitter) close() {
	g.mu.Lock()
	if g.closing {
		g.mu.Unlock()
		return
	}
	g.closing = true
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	<-g.finished
}

// ---------------------------------------------------------------------------
// Pebble.

func pebbleOptions() *pebble.Options {
	o := &pebble.Options{
		Logger: quietLogger{},
		// Defaults otherwise: 4 MiB memtable, 8 MiB block cache, WAL
		// recycling on, Sync commits fdatasync the WAL.
	}
	return o
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...interface{}) {}
func (quietLogger) Errorf(f string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "pebble: "+f+"\n", a...)
}
func (quietLogger) Fatalf(f string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "pebble: "+f+"\n", a...)
	os.Exit(1)
}

// orderKey is "o/" + 8-byte big-endian id.
func orderKey(dst []byte, id uint64) []byte {
	dst = append(dst, 'o', '/')
	return binary.BigEndian.AppendUint64(dst, id)
}

// userKey is "u/" + user + "/" + 8-byte big-endian id (value empty): a
// user's orders are the prefix "u/"+user+"/", in id order.
func userKey(dst []byte, user string, id uint64) []byte {
	dst = append(dst, 'u', '/')
	dst = append(dst, user...)
	dst = append(dst, '/')
	return binary.BigEndian.AppendUint64(dst, id)
}

// PebbleGC: our group commit, one pebble.Batch per group, committed Sync.
type PebbleGC struct {
	DB *pebble.DB
	g  *groupCommitter
	k  []byte
	v  []byte
}

func OpenPebbleGC(dir string) (*PebbleGC, error) {
	db, err := pebble.Open(dir, pebbleOptions())
	if err != nil {
		return nil, err
	}
	s := &PebbleGC{DB: db}
	s.g = newGroupCommitter(4096, s.commit)
	return s, nil
}

func (s *PebbleGC) commit(orders []*engine.Order) error {
	b := s.DB.NewBatch()
	defer b.Close()
	for _, o := range orders {
		s.k = orderKey(s.k[:0], o.ID)
		s.v = EncodeOrder(s.v[:0], o)
		if err := b.Set(s.k, s.v, nil); err != nil {
			return err
		}
		s.k = userKey(s.k[:0], o.UserID, o.ID)
		if err := b.Set(s.k, nil, nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}

func (s *PebbleGC) Append(ctx context.Context, o *engine.Order) error { return s.g.Append(ctx, o) }
func (s *PebbleGC) Close() error                                      { s.g.close(); return s.DB.Close() }

// PebbleApply: every Append commits its own batch with pebble.Sync; pebble's
// commit pipeline lets concurrent commits share WAL syncs.
type PebbleApply struct{ DB *pebble.DB }

func OpenPebbleApply(dir string) (*PebbleApply, error) {
	db, err := pebble.Open(dir, pebbleOptions())
	if err != nil {
		return nil, err
	}
	return &PebbleApply{DB: db}, nil
}

func (s *PebbleApply) Append(_ context.Context, o *engine.Order) error {
	var kb, vb [96]byte
	b := s.DB.NewBatch()
	k := orderKey(kb[:0], o.ID)
	if err := b.Set(k, EncodeOrder(vb[:0], o), nil); err != nil {
		b.Close()
		return err
	}
	if err := b.Set(userKey(kb[:0], o.UserID, o.ID), nil, nil); err != nil {
		b.Close()
		return err
	}
	err := s.DB.Apply(b, pebble.Sync)
	b.Close()
	return err
}

func (s *PebbleApply) Close() error { return s.DB.Close() }

// ---------------------------------------------------------------------------
// Append-only log: records [len uint32][crc32c uint32][payload], one write
// and one fdatasync per group, indexes in memory.

type LogMode int

const (
	LogGrow      LogMode = iota // file grows with each write: fdatasync also commits the size
	LogFallocate                // fallocate(2) 64 MiB ahead: unwritten extents, converted at sync
	LogZeroed                   // 64 MiB written with zeros and synced before use (a recycled segment)
)

const logChunk = 64 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type Log struct {
	f     *os.File
	mode  LogMode
	off   int64 // end of the records
	alloc int64 // preallocated end
	buf   []byte
	g     *groupCommitter

	idxMu  sync.RWMutex
	byID   map[uint64]int64    // order id -> record offset
	byUser map[string][]uint64 // user -> order ids
}

func OpenLog(dir string, mode LogMode) (*Log, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "orders.log"), os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o640)
	if err != nil {
		return nil, err
	}
	l := &Log{f: f, mode: mode, byID: make(map[uint64]int64), byUser: make(map[string][]uint64)}
	switch mode {
	case LogFallocate:
		if err := l.extend(); err != nil {
			f.Close()
			return nil, err
		}
	case LogZeroed:
		zero := make([]byte, 1<<20)
		for i := 0; i < logChunk; i += len(zero) {
			if _, err := f.Write(zero); err != nil {
				f.Close()
				return nil, err
			}
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, err
		}
		l.alloc = logChunk
	}
	// The new file's directory entry must be durable too.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	l.g = newGroupCommitter(4096, l.commit)
	return l, nil
}

// extend preallocates the next chunk (fallocate, mode 0: the size grows, so
// the fdatasync after it commits the new size once per chunk).
func (l *Log) extend() error {
	if err := syscall.Fallocate(int(l.f.Fd()), 0, l.alloc, logChunk); err != nil {
		return err
	}
	l.alloc += logChunk
	return nil
}

func (l *Log) commit(orders []*engine.Order) error {
	l.buf = l.buf[:0]
	offs := make([]int64, len(orders))
	for i, o := range orders {
		offs[i] = l.off + int64(len(l.buf))
		start := len(l.buf)
		l.buf = append(l.buf, 0, 0, 0, 0, 0, 0, 0, 0)
		l.buf = EncodeOrder(l.buf, o)
		p := l.buf[start+8:]
		binary.LittleEndian.PutUint32(l.buf[start:], uint32(len(p)))
		binary.LittleEndian.PutUint32(l.buf[start+4:], crc32.Checksum(p, castagnoli))
	}
	if l.mode != LogGrow && l.off+int64(len(l.buf)) > l.alloc {
		if err := l.extend(); err != nil {
			return err
		}
	}
	if _, err := l.f.WriteAt(l.buf, l.off); err != nil {
		return err
	}
	if err := syscall.Fdatasync(int(l.f.Fd())); err != nil {
		// After a failed fdatasync the page cache state is unknown: a real
		// store must stop (or reopen and re-verify), never retry the sync.
		return err
	}
	l.off += int64(len(l.buf))
	l.idxMu.Lock()
	for i, o := range orders {
		l.byID[o.ID] = offs[i]
		l.byUser[o.UserID] = append(l.byUser[o.UserID], o.ID)
	}
	l.idxMu.Unlock()
	return nil
}

func (l *Log) Append(ctx context.Context, o *engine.Order) error { return l.g.Append(ctx, o) }
func (l *Log) Close() error                                      { l.g.close(); return l.f.Close() }

// Offset reports where order id's record starts (the in-memory index).
func (l *Log) Offset(id uint64) (int64, bool) {
	l.idxMu.RLock()
	defer l.idxMu.RUnlock()
	off, ok := l.byID[id]
	return off, ok
}

// ScanLog reads records from path until the first one that is short, zero
// or fails its CRC (a torn tail, or preallocated space): what recovery does.
func ScanLog(path string, fn func(off int64, payload []byte) error) (end int64, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var off int64
	for int(off)+8 <= len(data) {
		n := binary.LittleEndian.Uint32(data[off:])
		c := binary.LittleEndian.Uint32(data[off+4:])
		if n == 0 || int(off)+8+int(n) > len(data) {
			break
		}
		p := data[off+8 : off+8+int64(n)]
		if crc32.Checksum(p, castagnoli) != c {
			break
		}
		if err := fn(off, p); err != nil {
			return off, err
		}
		off += 8 + int64(n)
	}
	return off, nil
}
