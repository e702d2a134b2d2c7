package seglog

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// collect opens the log in dir and returns it with the records replayed.
func collect(t testing.TB, opts Options) (*Log, [][]byte, []Pos) {
	t.Helper()
	var recs [][]byte
	var pos []Pos
	l, err := Open(opts, func(p Pos, rec []byte) error {
		recs = append(recs, bytes.Clone(rec))
		pos = append(pos, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l, recs, pos
}

// writeModes runs test with direct writes (where the filesystem takes
// them) and with writes through the page cache.
func writeModes(t *testing.T, test func(t *testing.T, buffered bool)) {
	t.Run("direct", func(t *testing.T) { test(t, false) })
	t.Run("buffered", func(t *testing.T) { test(t, true) })
}

func appendBatch(t testing.TB, l *Log, recs ...string) []Pos {
	t.Helper()
	if err := l.Begin(); err != nil {
		t.Fatal(err)
	}
	var pos []Pos
	for _, r := range recs {
		pos = append(pos, l.Add([]byte(r)))
	}
	if err := l.Commit(); err != nil {
		t.Fatal(err)
	}
	return pos
}

func TestAppendReadReopen(t *testing.T) { writeModes(t, testAppendReadReopen) }

func testAppendReadReopen(t *testing.T, buffered bool) {
	opts := Options{Buffered: buffered, Dir: t.TempDir(), SegmentBytes: 100}
	l, recs, _ := collect(t, opts)
	if len(recs) != 0 {
		t.Fatalf("a new log replays %d records", len(recs))
	}
	var want []string
	var wantPos []Pos
	for i := range 30 {
		batch := []string{fmt.Sprintf("record %d.a", i), fmt.Sprintf("record %d.b", i), "c"}
		wantPos = append(wantPos, appendBatch(t, l, batch...)...)
		want = append(want, batch...)
	}
	for i, p := range wantPos {
		got, err := l.Read(p, nil)
		if err != nil || string(got) != want[i] {
			t.Fatalf("Read(%d:%d) = %q, %v; want %q", p.Segment(), p.Offset(), got, err, want[i])
		}
	}
	var scanned []string
	if err := l.Scan(func(_ Pos, rec []byte) error { scanned = append(scanned, string(rec)); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(scanned) != fmt.Sprint(want) {
		t.Fatalf("Scan gave %q", scanned)
	}
	if wantPos[len(wantPos)-1].Segment() < 5 {
		t.Fatalf("100-byte segments were not rolled: the last record is in segment %d", wantPos[len(wantPos)-1].Segment())
	}

	size, segs := l.Size()
	l.Close()
	// On disk: the records, and zeros ahead only in the last segment (a
	// segment is cut to its records when the next begins).
	var onDisk int64
	files, _ := filepath.Glob(filepath.Join(opts.Dir, "*.log"))
	for i, f := range files {
		b, _ := os.ReadFile(f)
		records := bytes.TrimRight(b, "\x00")
		if i < len(files)-1 && len(records) != len(b) {
			t.Fatalf("closed segment %s keeps %d bytes of zeros", f, len(b)-len(records))
		}
		onDisk += int64(len(records))
	}
	if size != onDisk || segs != len(files) {
		t.Fatalf("Size() = %d bytes in %d segments; on disk %d in %d", size, segs, onDisk, len(files))
	}

	l, recs, pos := collect(t, opts)
	defer l.Close()
	if again, _ := l.Size(); again != size {
		t.Fatalf("Size() after reopening = %d, before %d", again, size)
	}
	if len(recs) != len(want) || l.Cut() != 0 {
		t.Fatalf("reopened with %d records (want %d), cut %d", len(recs), len(want), l.Cut())
	}
	for i := range recs {
		if string(recs[i]) != want[i] || pos[i] != wantPos[i] {
			t.Fatalf("record %d: %q at %v, want %q at %v", i, recs[i], pos[i], want[i], wantPos[i])
		}
	}
	appendBatch(t, l, "after reopening")
}

// A crash in the middle of a commit leaves any prefix of the batch's bytes
// (or zeros, where the size reached the disk before the data): recovery
// keeps the records before the batch and the batch's whole records, cuts
// the rest, and appends after the cut.
func TestTornTailIsCut(t *testing.T) { writeModes(t, testTornTailIsCut) }

func testTornTailIsCut(t *testing.T, buffered bool) {
	base := t.TempDir()
	src := Options{Buffered: buffered, Dir: filepath.Join(base, "src"), SegmentBytes: 4096} // small: a few KiB of zeros ahead, not MiBs
	l, _, _ := collect(t, src)
	appendBatch(t, l, "first", "second")
	appendBatch(t, l, "third", "fourth is longer")
	l.Close()
	seg := filepath.Join(src.Dir, "00000001.log")
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.TrimRight(data, "\x00") // the zeros written ahead of the records
	full := []string{"first", "second", "third", "fourth is longer"}
	ends := []int{13, 13 + 14, 13 + 14 + 13, len(data)} // where each record ends
	for n := 0; n <= len(data); n++ {
		for _, zeros := range []bool{false, true} {
			dir := filepath.Join(base, fmt.Sprintf("torn-%d-%v", n, zeros))
			os.MkdirAll(dir, 0o750)
			torn := bytes.Clone(data[:n])
			if zeros {
				torn = append(torn, make([]byte, len(data)-n)...)
			}
			if err := os.WriteFile(filepath.Join(dir, "00000001.log"), torn, 0o640); err != nil {
				t.Fatal(err)
			}
			l, recs, _ := collect(t, Options{Buffered: buffered, Dir: dir, SegmentBytes: 4096})
			whole := 0
			for whole < len(ends) && ends[whole] <= n {
				whole++
			}
			if len(recs) != whole {
				t.Fatalf("cut at %d (zeros %v): %d records back, want %d", n, zeros, len(recs), whole)
			}
			for i, r := range recs {
				if string(r) != full[i] {
					t.Fatalf("cut at %d: record %d is %q", n, i, r)
				}
			}
			good := 0
			if whole > 0 {
				good = ends[whole-1]
			}
			// Zeros after the records are space written ahead: kept, not
			// counted; anything else after them is cut.
			wantCut := int64(len(bytes.TrimRight(torn[good:], "\x00")))
			if l.Cut() != wantCut {
				t.Fatalf("cut at %d (zeros %v): Cut() = %d, want %d", n, zeros, l.Cut(), wantCut)
			}
			appendBatch(t, l, "after")
			l.Close()
			l, recs, _ = collect(t, Options{Buffered: buffered, Dir: dir, SegmentBytes: 4096})
			if len(recs) != whole+1 || string(recs[whole]) != "after" || l.Cut() != 0 {
				t.Fatalf("cut at %d: after appending, %d records back, cut %d", n, len(recs), l.Cut())
			}
			l.Close()
		}
	}
}

// Zeros after the last segment's records are space written ahead: they
// stay for the next appends. After an earlier segment's records, which the
// roll cut, they are damage (a lost write reads as zeros).
func TestZerosAfterTheRecords(t *testing.T) { writeModes(t, testZerosAfterTheRecords) }

func testZerosAfterTheRecords(t *testing.T, buffered bool) {
	opts := Options{Buffered: buffered, Dir: t.TempDir(), SegmentBytes: 32}
	l, _, _ := collect(t, opts)
	appendBatch(t, l, "in the first segment, which is long enough to roll")
	appendBatch(t, l, "second")
	l.Close()
	first := filepath.Join(opts.Dir, "00000001.log")
	second := filepath.Join(opts.Dir, "00000002.log")
	st2, _ := os.Stat(second)
	if st2.Size() <= 8+6 {
		t.Fatalf("no zeros ahead in the last segment: %d bytes", st2.Size())
	}
	l, recs, _ := collect(t, opts)
	if len(recs) != 2 || l.Cut() != 0 {
		t.Fatalf("records %q, cut %d", recs, l.Cut())
	}
	if after, _ := os.Stat(second); after.Size() != st2.Size() {
		t.Fatalf("the last segment's zeros ahead were touched: %d bytes, %d before", after.Size(), st2.Size())
	}
	appendBatch(t, l, "third")
	l.Close()
	l, recs, _ = collect(t, opts)
	if len(recs) != 3 || string(recs[2]) != "third" {
		t.Fatalf("after appending over the zeros: %q", recs)
	}
	l.Close()
	f, _ := os.OpenFile(first, os.O_APPEND|os.O_WRONLY, 0)
	f.Write(make([]byte, 100))
	f.Close()
	if _, err := Open(opts, func(Pos, []byte) error { return nil }); err == nil {
		t.Fatal("zeros after an earlier segment's records were accepted")
	}
}

// A torn batch may leave its later pages on disk and not its first: an
// intact record after a gap of zeros was never acknowledged. It is cut, and
// a later append that fills the gap exactly does not bring it back.
func TestIntactRecordAfterAGapIsCut(t *testing.T) { writeModes(t, testIntactRecordAfterAGapIsCut) }

func testIntactRecordAfterAGapIsCut(t *testing.T, buffered bool) {
	opts := Options{Buffered: buffered, Dir: t.TempDir(), SegmentBytes: 4096}
	l, _, _ := collect(t, opts)
	appendBatch(t, l, "acknowledged")
	l.Close()
	seg := filepath.Join(opts.Dir, "00000001.log")
	data, _ := os.ReadFile(seg)
	records := len(bytes.TrimRight(data, "\x00"))
	hidden := appendFrame(nil, []byte("never acknowledged"))
	gap := len(appendFrame(nil, []byte("fills the gap")))
	copy(data[records+gap:], hidden)
	os.WriteFile(seg, data, 0o640)
	l, recs, _ := collect(t, opts)
	if len(recs) != 1 || l.Cut() == 0 {
		t.Fatalf("records %q, cut %d", recs, l.Cut())
	}
	appendBatch(t, l, "fills the gap")
	l.Close()
	l, recs, _ = collect(t, opts)
	defer l.Close()
	if fmt.Sprintf("%q", recs) != `["acknowledged" "fills the gap"]` {
		t.Fatalf("records %q", recs)
	}
}

// A disk too full for the zeros ahead still takes the records alone.
func TestNoRoomForZerosAhead(t *testing.T) { writeModes(t, testNoRoomForZerosAhead) }

func testNoRoomForZerosAhead(t *testing.T, buffered bool) {
	var f faults
	opts := Options{Buffered: buffered, Dir: t.TempDir(), SegmentBytes: 4096, Fault: f.check}
	l, _, _ := collect(t, opts)
	f.set("write+zeros")
	appendBatch(t, l, "fits", "without the zeros")
	l.Close()
	f.set()
	l, recs, _ := collect(t, Options{Buffered: buffered, Dir: opts.Dir})
	defer l.Close()
	if fmt.Sprintf("%q", recs) != `["fits" "without the zeros"]` {
		t.Fatalf("records %q", recs)
	}
}

// Damage before the last segment is not a crash's torn write: Open refuses
// it rather than lose what follows.
func TestDamageBeforeTheTailIsRefused(t *testing.T) {
	opts := Options{Dir: t.TempDir(), SegmentBytes: 10}
	l, _, _ := collect(t, opts)
	appendBatch(t, l, "in the first segment")
	appendBatch(t, l, "in the second")
	l.Close()
	seg := filepath.Join(opts.Dir, "00000001.log")
	data, _ := os.ReadFile(seg)
	data[len(data)-1] ^= 1
	os.WriteFile(seg, data, 0o640)
	if _, err := Open(opts, func(Pos, []byte) error { return nil }); err == nil {
		t.Fatal("a damaged segment before the last was accepted")
	}
}

func TestReplayErrorStopsOpen(t *testing.T) {
	opts := Options{Dir: t.TempDir()}
	l, _, _ := collect(t, opts)
	appendBatch(t, l, "x")
	l.Close()
	boom := errors.New("boom")
	if _, err := Open(opts, func(Pos, []byte) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Open = %v, want the replay's error", err)
	}
}

// faults refuses the operations named in it.
type faults struct {
	mu  sync.Mutex
	ops map[string]bool
}

func (f *faults) set(ops ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = map[string]bool{}
	for _, op := range ops {
		f.ops[op] = true
	}
}

func (f *faults) check(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ops[op] {
		return fmt.Errorf("injected: %s refused", op)
	}
	return nil
}

// A failed write or sync leaves nothing that comes back at the next start
// (the failed batch is longer than what follows it, so that writing over
// it could not hide a missing cut), and the log goes on from where it was.
func TestFailedAppendLeavesNothing(t *testing.T) { writeModes(t, testFailedAppendLeavesNothing) }

func testFailedAppendLeavesNothing(t *testing.T, buffered bool) {
	ops := []string{"write", "sync"}
	if !buffered {
		// An I/O error, not a refusal of O_DIRECT; and one after the
		// first block, which holds "kept" and the failed batch, was
		// written: the cut must take the batch out of it.
		ops = append(ops, "write-direct", "write-direct-torn")
	}
	for _, op := range ops {
		t.Run(op, func(t *testing.T) {
			var f faults
			opts := Options{Buffered: buffered, Dir: t.TempDir(), Fault: f.check}
			l, _, _ := collect(t, opts)
			appendBatch(t, l, "kept")
			f.set(op)
			if err := l.Begin(); err != nil {
				t.Fatal(err)
			}
			l.Add([]byte("lost, and longer than what comes after it"))
			if err := l.Commit(); err == nil || errors.Is(err, ErrUnsure) {
				t.Fatalf("Commit while %s fails: %v", op, err)
			}
			f.set()
			l.Close()
			l, recs, _ := collect(t, Options{Buffered: buffered, Dir: opts.Dir, Fault: f.check})
			if fmt.Sprintf("%q", recs) != `["kept"]` {
				t.Fatalf("records after a failed %s: %q", op, recs)
			}
			appendBatch(t, l, "after")
			l.Close()
			l, recs, _ = collect(t, Options{Buffered: buffered, Dir: opts.Dir})
			defer l.Close()
			if fmt.Sprintf("%q", recs) != `["kept" "after"]` {
				t.Fatalf("records after a failed %s: %q", op, recs)
			}
		})
	}
}

// When the failed batch cannot be cut off either, the log refuses every
// later append: an append after it could make the failed records durable.
func TestBrokenWhenTheCutFails(t *testing.T) { writeModes(t, testBrokenWhenTheCutFails) }

func testBrokenWhenTheCutFails(t *testing.T, buffered bool) {
	var f faults
	opts := Options{Buffered: buffered, Dir: t.TempDir(), Fault: f.check}
	l, _, _ := collect(t, opts)
	defer l.Close()
	f.set("sync", "truncate")
	if err := l.Begin(); err != nil {
		t.Fatal(err)
	}
	l.Add([]byte("lost"))
	if err := l.Commit(); !errors.Is(err, ErrUnsure) {
		t.Fatalf("Commit when neither the sync nor the cut works = %v, want ErrUnsure", err)
	}
	f.set()
	if err := l.Begin(); !errors.Is(err, ErrBroken) {
		t.Fatalf("Begin after a failed cut = %v, want ErrBroken", err)
	}
}

func TestReadRefusesWhatIsNotARecord(t *testing.T) {
	l, _, _ := collect(t, Options{Dir: t.TempDir()})
	defer l.Close()
	pos := appendBatch(t, l, "a record")
	if _, err := l.Read(pos[0]+1, nil); err == nil {
		t.Fatal("read in the middle of a record")
	}
	if _, err := l.Read(makePos(9, 0), nil); err == nil {
		t.Fatal("read from a segment that does not exist")
	}
}

// FuzzRecover: whatever a segment holds, recovery's scan neither panics
// nor replays a record that was not framed whole and intact, and the end it
// reports (where Open cuts the last segment: TestTornTailIsCut) is the end
// of the records it replayed.
func FuzzRecover(f *testing.F) {
	var good []byte
	for _, r := range []string{"a", "b", "a longer record"} {
		good = appendFrame(good, []byte(r))
	}
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add(append(bytes.Clone(good), 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0))
	f.Add([]byte{})
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, data []byte) {
		var rebuilt []byte
		end, err := scan(data, func(off int64, rec []byte) error {
			if off != int64(len(rebuilt)) {
				t.Fatalf("a record at %d, after %d bytes of records", off, len(rebuilt))
			}
			rebuilt = appendFrame(rebuilt, rec)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, rebuilt) || end != int64(len(rebuilt)) {
			t.Fatalf("replayed %d bytes of records that are not the segment's prefix, end %d", len(rebuilt), end)
		}
		if _, ok := frame(data[end:]); ok {
			t.Fatal("scan stopped before an intact record")
		}
	})
}

func appendFrame(dst, rec []byte) []byte {
	l := &Log{pending: true, batch: dst}
	l.Add(rec)
	return l.batch
}

// Batches of every size, read back at once (so that the block a direct
// write rewrites was just read through the page cache), across block and
// segment ends and a reopening: both ways of writing give the same records
// and the same bytes on disk.
func TestBlocksRewrittenByLaterBatches(t *testing.T) {
	segments := map[bool][][]byte{}
	for _, buffered := range []bool{false, true} {
		opts := Options{Dir: t.TempDir(), SegmentBytes: 64 << 10, Buffered: buffered}
		l, _, _ := collect(t, opts)
		rnd := rand.New(rand.NewPCG(1, 2))
		var want []string
		for b := range 400 {
			if b == 200 {
				l.Close()
				var recs [][]byte
				l, recs, _ = collect(t, opts)
				if len(recs) != len(want) {
					t.Fatalf("reopened with %d records, want %d", len(recs), len(want))
				}
			}
			batch := make([]string, 1+rnd.IntN(6))
			for i := range batch {
				batch[i] = fmt.Sprintf("%d.%d %s", b, i, bytes.Repeat([]byte{'x'}, rnd.IntN(1200)))
			}
			for i, p := range appendBatch(t, l, batch...) {
				if got, err := l.Read(p, nil); err != nil || string(got) != batch[i] {
					t.Fatalf("batch %d: Read(%d:%d) = %d bytes, %v; want %d bytes", b, p.Segment(), p.Offset(), len(got), err, len(batch[i]))
				}
			}
			want = append(want, batch...)
		}
		if want := !buffered && takesDirect(t, opts.Dir); l.Direct() != want {
			t.Fatalf("Direct() = %v with Buffered %v", l.Direct(), buffered)
		}
		l.Close()
		l, recs, _ := collect(t, opts)
		l.Close()
		if len(recs) != len(want) {
			t.Fatalf("buffered %v: %d records back, want %d", buffered, len(recs), len(want))
		}
		for i := range recs {
			if string(recs[i]) != want[i] {
				t.Fatalf("buffered %v: record %d differs", buffered, i)
			}
		}
		files, _ := filepath.Glob(filepath.Join(opts.Dir, "*.log"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			segments[buffered] = append(segments[buffered], bytes.TrimRight(b, "\x00"))
		}
	}
	if len(segments[false]) < 3 || len(segments[false]) != len(segments[true]) {
		t.Fatalf("%d segments written directly, %d through the page cache", len(segments[false]), len(segments[true]))
	}
	for i := range segments[false] {
		if !bytes.Equal(segments[false][i], segments[true][i]) {
			t.Fatalf("segment %d differs between direct and buffered writes", i+1)
		}
	}
}

// Where the filesystem takes O_DIRECT, commits are direct writes; where it
// refuses it, the log writes through the page cache and loses nothing.
func TestDirectWritesOrTheirFallback(t *testing.T) {
	dir := t.TempDir()
	l, _, _ := collect(t, Options{Dir: filepath.Join(dir, "direct")})
	appendBatch(t, l, "a")
	if !l.Direct() && takesDirect(t, dir) {
		t.Fatal("commits are not direct writes on a filesystem that takes them")
	}
	l.Close()

	// Refused when the segment is opened, at the first direct write, or
	// at a later one (a disk whose blocks are larger than 4 KiB refuses
	// the first write that does not start at a multiple of its block).
	for i, c := range []struct {
		op    string
		err   error
		after int // direct writes that work before the refusals begin
	}{{"open-direct", syscall.EINVAL, 0}, {"write-direct", syscall.EINVAL, 0},
		{"write-direct", syscall.EOPNOTSUPP, 0}, {"write-direct", syscall.EINVAL, 1}} {
		var worked atomic.Int64
		refuse := func(op string) error {
			if op == c.op && (op != "write-direct" || worked.Add(1) > int64(c.after)) {
				return c.err
			}
			return nil
		}
		refused := fmt.Sprintf("%d-%s-%v", i, c.op, c.err)
		opts := Options{Dir: filepath.Join(dir, fmt.Sprint(i)), Fault: refuse}
		l, _, _ = collect(t, opts)
		appendBatch(t, l, "first", "second")
		if l.Direct() != (c.after > 0) {
			t.Fatalf("%s: Direct() = %v after one commit", refused, l.Direct())
		}
		appendBatch(t, l, "third")
		if l.Direct() {
			t.Fatalf("Direct() after %s was refused", refused)
		}
		l.Close()
		l, recs, _ := collect(t, opts)
		appendBatch(t, l, "fourth")
		l.Close()
		if fmt.Sprintf("%q", recs) != `["first" "second" "third"]` {
			t.Fatalf("%s refused: records %q", refused, recs)
		}
	}
}

func takesDirect(t *testing.T, dir string) bool {
	t.Helper()
	ok, err := TakesDirect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Logf("the filesystem of %s refuses O_DIRECT", dir)
	}
	return ok
}

// The segment is opened for direct writes through its own descriptor: a
// directory renamed under the log does not send them to another file.
func TestDirectWritesFollowTheDescriptor(t *testing.T) {
	base := t.TempDir()
	if !takesDirect(t, base) {
		t.Skip("no direct writes here")
	}
	opts := Options{Dir: filepath.Join(base, "a")}
	l, _, _ := collect(t, opts)
	if err := os.Rename(opts.Dir, filepath.Join(base, "b")); err != nil {
		t.Fatal(err)
	}
	pos := appendBatch(t, l, "written after the rename")
	if got, err := l.Read(pos[0], nil); err != nil || string(got) != "written after the rename" || !l.Direct() {
		t.Fatalf("Read = %q, %v; Direct() = %v", got, err, l.Direct())
	}
	l.Close()
	l, recs, _ := collect(t, Options{Dir: filepath.Join(base, "b")})
	defer l.Close()
	if fmt.Sprintf("%q", recs) != `["written after the rename"]` {
		t.Fatalf("records %q", recs)
	}
}

// After a short write, what is left to write is the rest of the pieces,
// wherever it ended.
func TestAdvanceAfterAShortWrite(t *testing.T) {
	whole := []byte("abcdefghij")
	for n := 0; n <= len(whole); n++ {
		vecs := [][]byte{whole[:3], whole[3:4], whole[4:10]}
		left := advance(vecs, n)
		if got := bytes.Join(left, nil); string(got) != string(whole[n:]) {
			t.Fatalf("after %d bytes: %q left", n, got)
		}
		for _, v := range left {
			if len(v) == 0 {
				t.Fatalf("after %d bytes: an empty piece is left", n)
			}
		}
	}
}

// ZeroAhead writes the zeros ahead between batches, so that the commits
// after it write their records alone; it writes nothing while half of them
// is left; a failed one is cut back and the log goes on.
func TestZeroAheadBetweenBatches(t *testing.T) { writeModes(t, testZeroAheadBetweenBatches) }

func testZeroAheadBetweenBatches(t *testing.T, buffered bool) {
	var mu sync.Mutex
	var ops []string
	var fail string
	opts := Options{Buffered: buffered, Dir: t.TempDir(), SegmentBytes: 64 << 10, Fault: func(op string) error {
		mu.Lock()
		defer mu.Unlock()
		ops = append(ops, op)
		if op == fail {
			return fmt.Errorf("injected: %s refused", op)
		}
		return nil
	}}
	seen := func() string {
		mu.Lock()
		defer mu.Unlock()
		s := strings.Join(ops, " ")
		ops = nil
		return s
	}
	seg := filepath.Join(opts.Dir, "00000001.log")
	size := func() int64 { st, _ := os.Stat(seg); return st.Size() }

	l, _, _ := collect(t, opts)
	if err := l.ZeroAhead(); err != nil {
		t.Fatal(err)
	}
	if got := seen(); !strings.HasPrefix(got, "write+zeros") || size() != 64<<10 {
		t.Fatalf("ZeroAhead on a new segment: ops %q, %d bytes", got, size())
	}
	rec := strings.Repeat("r", 1000)
	appendBatch(t, l, rec)
	if got := seen(); strings.Contains(got, "zeros") {
		t.Fatalf("a commit after ZeroAhead wrote zeros: %q", got)
	}
	if err := l.ZeroAhead(); err != nil || seen() != "" {
		t.Fatal("ZeroAhead wrote with more than half of the zeros left")
	}
	for i := 0; i < 33; i++ { // past half of the zeros
		appendBatch(t, l, rec)
	}
	if got := seen(); strings.Contains(got, "zeros") {
		t.Fatalf("a commit within the zeros wrote zeros: %q", got)
	}
	fail = "write+zeros"
	if err := l.ZeroAhead(); err == nil {
		t.Fatal("a failed ZeroAhead said nothing")
	}
	fail = ""
	seen()
	appendBatch(t, l, "after the failure")
	if err := l.ZeroAhead(); err != nil {
		t.Fatal(err)
	}
	if got := seen(); !strings.Contains(got, "write+zeros") || size() < 34*1008+64<<10/2 {
		t.Fatalf("ZeroAhead past half: ops %q, %d bytes", got, size())
	}
	appendBatch(t, l, "last")
	l.Close()
	l, recs, _ := collect(t, Options{Buffered: buffered, Dir: opts.Dir, SegmentBytes: opts.SegmentBytes})
	defer l.Close()
	if len(recs) != 36 || string(recs[34]) != "after the failure" || string(recs[35]) != "last" || l.Cut() != 0 {
		t.Fatalf("%d records after reopening, cut %d", len(recs), l.Cut())
	}
}
