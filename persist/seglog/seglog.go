// Package seglog is an append-only log of checksummed records in segment
// files, made for group commit: one goroutine gathers a batch of records
// and makes them durable with one write (see Direct writes below).
//
// A record is framed as [length uint32][CRC-32C of the payload uint32]
// [payload], little-endian. Segments are files named by a sequence number
// (00000001.log, ...) in one directory, rolled when one has grown past
// Options.SegmentBytes.
//
// Zeros ahead: a commit that reaches past the zeros already written after
// the records writes the next few MiB of zeros with its batch. Most
// commits then overwrite blocks the file already has, and their fdatasync
// writes the data alone, without a journal commit for a new size: on the
// development machine about 40% less latency and CPU per sync than
// appending to a growing file. ZeroAhead writes them between batches, so
// that a commit writes them only when the writer never had a moment for it
// (before, a new store's first commit, the rush's first buyers, paid ~3 ms
// for them). A segment is cut to its records when the next one begins. A
// record is never empty, so zeros end a scan.
//
// Direct writes: the segment being appended to is also open with O_DIRECT
// and O_DSYNC, and a commit is one write of the 4 KiB blocks it touches:
// the last block's records already written (kept in memory), the batch,
// zeros to the block's end. The write returns once the blocks are on the
// disk, with no fdatasync after it and no copy in the page cache: on the
// development machine about a fifth less latency and a quarter less CPU
// per commit than a write and an fdatasync (BenchmarkCommit, tuning.md).
// Reads go through the page cache, whose copy of the blocks a direct write
// wrote the kernel drops, so a record is readable once committed.
// Rewriting a block that holds records acknowledged before is safe because
// they are written again byte for byte: a torn write leaves each sector
// old or new, and both hold them. A filesystem that refuses O_DIRECT
// (tmpfs before Linux 6.6, some network and FUSE filesystems), or a disk
// that refuses its 4 KiB alignment, gets the write and fdatasync instead,
// from the refusal on, as does Options.Buffered.
//
// Recovery: Open reads every segment in order. A torn write can only be at
// the end of the last segment (a crash in the middle of an append), so the
// last segment is cut at its first record that is short or fails its
// checksum, unless only zeros follow, and the cut is made durable before
// anything is appended. Anything after the records of an earlier segment
// is damage, not a crash (the roll cut it to its records), and Open
// refuses it.
//
// A failed append leaves nothing behind: the file is cut back to where the
// batch began and that is synced, so the failed records can never come back
// at the next start. When even that fails the log is broken: every later
// append fails (the process must be restarted, and recovery decides).
//
// The log keeps no index: its user reads each record once at Open and keeps
// what it needs (a record's Pos reads it back).
package seglog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultSegmentBytes is the size past which a segment is closed and the
// next one begun.
const DefaultSegmentBytes = 64 << 20

// MaxRecord is the largest payload a record may carry.
const MaxRecord = 1 << 20

const headerLen = 8

// zerosAhead is how many bytes of zeros a commit that passes the zeros
// written so far writes after its batch (at most a segment's size).
const zerosAhead = 4 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options configures a Log.
type Options struct {
	// Dir holds the segments; created if missing.
	Dir string
	// SegmentBytes is the size past which the next batch begins a new
	// segment. Default DefaultSegmentBytes.
	SegmentBytes int64
	// Fault, when set, is asked before each write, sync and truncation of
	// a segment ("write", "sync", "truncate"), and before a segment is
	// opened for direct writes and each direct write ("open-direct",
	// "write-direct"), and an error it returns is taken for the system's:
	// for tests of a disk that refuses. An error for "write-direct-torn"
	// fails a direct write after its first block was written.
	Fault func(op string) error
	// Buffered writes through the page cache and syncs with fdatasync,
	// never with O_DIRECT (which is used where the filesystem takes it).
	Buffered bool
}

// block is the alignment of direct writes: a multiple of the logical
// block size of every disk in use (512 bytes or 4 KiB).
const block = 4096

// Pos is where a record is: its segment's number and its offset in it.
type Pos uint64

func makePos(seg uint32, off int64) Pos { return Pos(uint64(seg)<<32 | uint64(off)) }

// Segment is the number of the segment the record is in.
func (p Pos) Segment() uint32 { return uint32(p >> 32) }

// Offset is where the record's frame starts in its segment.
func (p Pos) Offset() int64 { return int64(uint32(p)) }

// Log is an open log. Begin, Add and Commit are for one goroutine at a time
// (the writer); Read and Scan may run beside it from any goroutine.
type Log struct {
	opts Options

	mu      sync.RWMutex
	segs    map[uint32]*os.File // every segment, open for reading; the last also for writing
	last    uint32              // the segment being appended to
	end     int64               // its committed size
	zeroed  int64               // where the zeros written after the records end (>= end)
	closed  int64               // the sizes of the segments before it
	broken  error               // set when a failed append could not be undone
	cut     int64               // bytes cut off a torn tail at Open
	batch   []byte              // the writer's: records framed since Begin
	bseg    uint32              // the segment the batch goes to
	boff    int64               // and where in it
	pending bool                // Begin called, Commit not yet

	// Direct writes (see the package's comment): direct is the segment
	// being appended to, open with O_DIRECT|O_DSYNC (nil: not open yet,
	// or buffered); tail is that segment's bytes from the start of the
	// block holding its end to its end; aligned is the write's buffer.
	direct   *os.File
	buffered bool        // O_DIRECT refused, or Options.Buffered
	directOK atomic.Bool // a direct write has worked
	tail     []byte
	aligned  []byte
	vecs     [][]byte // a commit's pieces: its records, zeros ahead
}

// ErrBroken is wrapped by every append after one that could not be undone.
var ErrBroken = errors.New("seglog: the log is broken (a failed append could not be undone); restart to recover")

// ErrUnsure is wrapped by the error of the Commit that broke the log: its
// records may or may not come back at the next start. Whoever waits for
// them must not be told they failed (nor that they are stored): the only
// true answer is none, and the restart's recovery decides.
var ErrUnsure = errors.New("seglog: the batch may or may not be stored")

// Open opens the log in opts.Dir, creating it if missing, and calls replay
// with every record in order (rec, never empty, must not be kept: it is
// reused).
// An error from replay stops Open with it.
func Open(opts Options, replay func(pos Pos, rec []byte) error) (*Log, error) {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	if opts.SegmentBytes > 1<<31 {
		return nil, fmt.Errorf("seglog: a segment of %d bytes is too big (at most 2 GiB)", opts.SegmentBytes)
	}
	if _, err := os.Stat(opts.Dir); errors.Is(err, fs.ErrNotExist) {
		// A new directory's name must be durable too, or its segments
		// could vanish with it.
		if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
			return nil, fmt.Errorf("cannot create the log directory %q: %w", opts.Dir, err)
		}
		if err := syncDir(filepath.Dir(opts.Dir)); err != nil {
			return nil, err
		}
	}
	nums, err := segments(opts.Dir)
	if err != nil {
		return nil, err
	}
	l := &Log{opts: opts, segs: make(map[uint32]*os.File, len(nums)+1), buffered: opts.Buffered}
	for i, n := range nums {
		f, err := os.OpenFile(l.path(n), os.O_RDWR, 0)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("cannot open log segment: %w", err)
		}
		l.segs[n] = f
		data, err := io.ReadAll(f)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("cannot read log segment %s: %w", f.Name(), err)
		}
		good, err := scan(data, func(off int64, rec []byte) error { return replay(makePos(n, off), rec) })
		if err != nil {
			l.Close()
			return nil, err
		}
		last := i == len(nums)-1
		torn := bytes.TrimRight(data[good:], "\x00") // zeros: written ahead of the records
		switch {
		case !last && good < int64(len(data)):
			// The roll cut a segment to its records before the next
			// began: anything after them, zeros too, is damage.
			l.Close()
			return nil, fmt.Errorf("seglog: segment %s is damaged at offset %d of %d (not its tail: a later segment exists); refusing to start", f.Name(), good, len(data))
		case len(torn) > 0:
			l.cut = int64(len(torn))
			if err := l.truncate(f, good); err != nil {
				l.Close()
				return nil, fmt.Errorf("cannot cut the torn tail of log segment %s: %w", f.Name(), err)
			}
			data = data[:good]
		case last:
			// What was replayed may so far be in the page cache only (a
			// kill -9 between a write and its sync): make it durable
			// before anyone acts on it.
			if err := l.fault("sync"); err != nil {
				l.Close()
				return nil, fmt.Errorf("cannot sync log segment %s: %w", f.Name(), err)
			}
			if err := syscall.Fdatasync(int(f.Fd())); err != nil {
				l.Close()
				return nil, fmt.Errorf("cannot sync log segment %s: %w", f.Name(), err)
			}
		}
		if i > 0 {
			l.closed += l.end
		}
		l.last, l.end, l.zeroed = n, good, int64(len(data))
		l.tail = append(l.tail[:0], data[good&^(block-1):good]...)
	}
	if len(nums) == 0 {
		if err := l.roll(1); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// segments lists the numbers of the segment files in dir, in order.
func segments(dir string) ([]uint32, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cannot list the log directory %q: %w", dir, err)
	}
	var nums []uint32
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok || e.IsDir() {
			continue
		}
		n, err := strconv.ParseUint(name, 10, 32)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("seglog: %q in %s is not a segment's name", e.Name(), dir)
		}
		nums = append(nums, uint32(n))
	}
	slices.Sort(nums)
	return nums, nil
}

func (l *Log) path(n uint32) string { return filepath.Join(l.opts.Dir, fmt.Sprintf("%08d.log", n)) }

// scan calls fn with each whole, intact record of data and returns where
// the intact records end.
func scan(data []byte, fn func(off int64, rec []byte) error) (int64, error) {
	var off int64
	for {
		rec, ok := frame(data[off:])
		if !ok {
			return off, nil
		}
		if err := fn(off, rec); err != nil {
			return off, err
		}
		off += headerLen + int64(len(rec))
	}
}

// frame returns the payload of the record b begins with, when it is whole
// and intact. A record is never empty: zeros, which a crash can leave
// where the file's size reached the disk before its data, would read as
// empty records with a good checksum.
func frame(b []byte) ([]byte, bool) {
	if len(b) < headerLen {
		return nil, false
	}
	n := binary.LittleEndian.Uint32(b)
	if n == 0 || n > MaxRecord || uint64(len(b)-headerLen) < uint64(n) {
		return nil, false
	}
	rec := b[headerLen : headerLen+int(n)]
	return rec, crc32.Checksum(rec, castagnoli) == binary.LittleEndian.Uint32(b[4:])
}

// Direct reports whether commits are direct writes (see the package's
// comment): false before the first commit, with Options.Buffered, and
// where the filesystem refused them.
func (l *Log) Direct() bool { return l.directOK.Load() }

// Cut is how many bytes of a torn tail Open cut off the last segment.
func (l *Log) Cut() int64 { return l.cut }

// Begin starts a batch. The batch goes to a new segment when the current
// one has grown past Options.SegmentBytes.
func (l *Log) Begin() error {
	l.mu.RLock()
	broken, end, last := l.broken, l.end, l.last
	l.mu.RUnlock()
	if broken != nil {
		return broken
	}
	if end >= l.opts.SegmentBytes {
		if err := l.roll(last + 1); err != nil {
			return err
		}
		end, last = 0, last+1
	}
	l.batch, l.bseg, l.boff, l.pending = l.batch[:0], last, end, true
	return nil
}

// Add frames rec into the batch (copying it) and says where it will be.
// A record holds 1 to MaxRecord bytes.
func (l *Log) Add(rec []byte) Pos {
	if !l.pending {
		panic("seglog: Add without Begin")
	}
	if len(rec) == 0 || len(rec) > MaxRecord {
		panic(fmt.Sprintf("seglog: a record of %d bytes (1 to %d)", len(rec), MaxRecord))
	}
	pos := makePos(l.bseg, l.boff+int64(len(l.batch)))
	l.batch = binary.LittleEndian.AppendUint32(l.batch, uint32(len(rec)))
	l.batch = binary.LittleEndian.AppendUint32(l.batch, crc32.Checksum(rec, castagnoli))
	l.batch = append(l.batch, rec...)
	return pos
}

// Commit writes the batch and syncs it: nil means every record Added since
// Begin is durable. On error none of them is stored, unless the error wraps
// ErrUnsure.
func (l *Log) Commit() error {
	l.pending = false
	if len(l.batch) == 0 {
		return nil
	}
	if l.boff+int64(len(l.batch)) > math.MaxUint32 { // a Pos holds a 32-bit offset
		return fmt.Errorf("seglog: a batch of %d bytes at offset %d passes 4 GiB; use smaller segments or batches", len(l.batch), l.boff)
	}
	l.mu.RLock()
	f := l.segs[l.bseg]
	l.mu.RUnlock()
	records := int64(len(l.batch))
	var zeros int64
	if l.boff+records > l.zeroed {
		zeros = l.zerosAhead()
	}
	err := l.write(f, zeros)
	if err != nil && zeros > 0 {
		// The zeros may be what did not fit (a nearly full disk): cut
		// back, then write the records alone.
		if err := l.undo(f, records, err); errors.Is(err, ErrUnsure) {
			return err
		}
		zeros = 0
		err = l.write(f, zeros)
	}
	if err != nil {
		return l.undo(f, records, err)
	}
	end := l.boff + records
	l.wroteZeros(end, zeros)
	l.keepTail(l.batch)
	l.mu.Lock()
	l.end = end
	l.mu.Unlock()
	if cap(l.batch) > 4<<20 { // one huge batch must not pin its buffer
		l.batch = nil
	}
	if cap(l.aligned) > 4<<20 {
		l.aligned = nil
	}
	return nil
}

// ZeroAhead writes the zeros ahead now, when less than half of them is left
// after the records, so that no commit soon has to write them with its
// batch (4 MiB more to write: ~3 ms on the development machine, paid by
// that batch's buyers). Call it between batches when nothing waits for a
// commit: after Open, and when the writer is idle. It changes no record; a
// commit that passes the zeros still writes its own. A batch begun and not
// committed is dropped, as the next Begin would drop it. On error the zeros
// are cut back as a failed commit's are.
func (l *Log) ZeroAhead() error {
	l.pending = false
	l.mu.RLock()
	broken, end, f := l.broken, l.end, l.segs[l.last]
	l.mu.RUnlock()
	zeros := l.zerosAhead()
	if broken != nil || f == nil || end >= l.opts.SegmentBytes || l.zeroed-end >= zeros/2 {
		return broken // a full segment rolls at the next Begin, zeros and all
	}
	l.batch, l.bseg, l.boff = l.batch[:0], l.last, end
	if err := l.write(f, zeros); err != nil {
		return l.undo(f, 0, err)
	}
	l.wroteZeros(end, zeros)
	return nil
}

// zerosAhead is how many bytes of zeros a write ahead of the records puts
// in the segment.
func (l *Log) zerosAhead() int64 { return min(zerosAhead, l.opts.SegmentBytes) }

// wroteZeros records that a write ended with the records at end and that
// many zeros after them.
func (l *Log) wroteZeros(end, zeros int64) {
	written := end + zeros
	if l.direct != nil {
		// A direct write pads the records to a block's end, and its
		// zeros to whole blocks.
		written = roundUp(end) + roundUp(zeros)
	}
	l.zeroed = max(l.zeroed, written)
}

// write writes the batch and that many zeros after it, and makes them
// durable: with one direct write where the filesystem takes it, else with
// a write and an fdatasync.
func (l *Log) write(f *os.File, zeros int64) error {
	op := "write"
	if zeros > 0 {
		op = "write+zeros"
	}
	if err := l.fault(op); err != nil {
		return err
	}
	direct, err := l.writeDirect(f, zeros)
	if !direct && err == nil {
		l.vecs = appendZeros(append(l.vecs[:0], l.batch), zeros)
		err = pwritev(f, l.vecs, l.boff)
	}
	if err == nil {
		if err = l.fault("sync"); err == nil && !direct {
			err = syscall.Fdatasync(int(f.Fd()))
		}
	}
	return err
}

// writeDirect writes the batch with O_DIRECT|O_DSYNC: the blocks from the
// one holding the batch's start, the records before it in that block
// first. It reports false, having written nothing, when the filesystem
// refuses O_DIRECT; the log then writes through the page cache from now on.
func (l *Log) writeDirect(f *os.File, zeros int64) (bool, error) {
	if l.buffered {
		return false, nil
	}
	if l.direct == nil {
		d, err := l.openDirect(f)
		if refusesDirect(err) {
			l.buffered = true
			return false, nil
		}
		if err != nil {
			return true, fmt.Errorf("cannot open log segment %s for direct writes: %w", f.Name(), err)
		}
		l.direct = d
	}
	start := l.boff &^ (block - 1)
	if int64(len(l.tail)) != l.boff-start {
		panic(fmt.Sprintf("seglog: %d bytes of the last block kept for a batch at %d", len(l.tail), l.boff))
	}
	n := len(l.tail) + len(l.batch)
	buf := l.alignedBuffer(int(roundUp(int64(n))))
	copy(buf[copy(buf, l.tail):], l.batch)
	clear(buf[n:])
	err := l.fault("write-direct")
	if err == nil {
		if err = l.fault("write-direct-torn"); err != nil {
			// For tests: the write fails after its first block.
			l.direct.WriteAt(buf[:block], start)
		} else {
			l.vecs = appendZeros(append(l.vecs[:0], buf), roundUp(zeros))
			err = pwritev(l.direct, l.vecs, start)
		}
	}
	if refusesDirect(err) {
		// Refused before any I/O, for its flags or its alignment (a
		// disk whose blocks are larger than 4 KiB, met at the first
		// write that does not start at a multiple of its block):
		// write through the page cache from now on.
		l.direct.Close()
		l.direct, l.buffered = nil, true
		l.directOK.Store(false)
		return false, nil
	}
	if err == nil && !l.directOK.Load() {
		l.directOK.Store(true)
	}
	return true, err
}

// TakesDirect reports whether the filesystem of dir takes O_DIRECT, by
// writing a block to a file of its own there that way (then removing it).
// tmpfs before Linux 6.6, for one, refuses it.
func TakesDirect(dir string) (bool, error) {
	f, err := os.CreateTemp(dir, "direct-probe-*")
	if err != nil {
		return false, err
	}
	f.Close()
	defer os.Remove(f.Name())
	d, err := os.OpenFile(f.Name(), os.O_WRONLY|syscall.O_DIRECT, 0)
	if refusesDirect(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer d.Close()
	_, err = d.WriteAt(alignedBytes(block), 0)
	if refusesDirect(err) {
		return false, nil
	}
	return err == nil, err
}

// openDirect opens f's file again for direct writes, through f's own
// descriptor where /proc is mounted: the same file even if its name has
// changed since.
func (l *Log) openDirect(f *os.File) (*os.File, error) {
	if err := l.fault("open-direct"); err != nil {
		return nil, err
	}
	const flags = os.O_WRONLY | syscall.O_DIRECT | syscall.O_DSYNC
	d, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), flags, 0)
	if errors.Is(err, fs.ErrNotExist) {
		d, err = os.OpenFile(f.Name(), flags, 0)
	}
	return d, err
}

// refusesDirect reports whether err is a filesystem's refusal of O_DIRECT
// (or of its alignment), which comes before any I/O.
func refusesDirect(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP)
}

func roundUp(n int64) int64 { return (n + block - 1) &^ (block - 1) }

// zeroChunk is read-only zeros, aligned for direct writes: the zeros ahead
// are written from it, as many times as they need, in the commit's one
// pwritev.
var zeroChunk = alignedBytes(64 << 10)

// appendZeros appends n bytes of zeros to vecs, as pieces of zeroChunk.
func appendZeros(vecs [][]byte, n int64) [][]byte {
	for n > 0 {
		k := min(n, int64(len(zeroChunk)))
		vecs = append(vecs, zeroChunk[:k])
		n -= k
	}
	return vecs
}

// pwritev writes vecs at off, all of them (it goes on after a short write).
func pwritev(f *os.File, vecs [][]byte, off int64) error {
	fd := int(f.Fd())
	for len(vecs) > 0 {
		n, err := unix.Pwritev(fd, vecs, off)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "pwritev", Path: f.Name(), Err: err}
		}
		if n == 0 {
			return &os.PathError{Op: "pwritev", Path: f.Name(), Err: io.ErrShortWrite}
		}
		off += int64(n)
		vecs = advance(vecs, n)
	}
	return nil
}

// advance drops the first n bytes of vecs, as a short write wrote them.
func advance(vecs [][]byte, n int) [][]byte {
	for n > 0 {
		k := min(n, len(vecs[0]))
		vecs[0] = vecs[0][k:]
		n -= k
		if len(vecs[0]) == 0 {
			vecs = vecs[1:]
		}
	}
	return vecs
}

// alignedBuffer returns n bytes (a multiple of block) of the writer's
// buffer for direct writes, grown when it is short.
func (l *Log) alignedBuffer(n int) []byte {
	if cap(l.aligned) < n {
		l.aligned = alignedBytes(n)
	}
	return l.aligned[:n]
}

// alignedBytes allocates n zeroed bytes at an address that is a multiple
// of block, as O_DIRECT needs.
func alignedBytes(n int) []byte {
	b := make([]byte, n+block)
	skip := (block - int(uintptr(unsafe.Pointer(&b[0]))&(block-1))) & (block - 1)
	return b[skip : skip+n : skip+n]
}

// keepTail updates the last block's bytes after records were appended at
// l.boff.
func (l *Log) keepTail(records []byte) {
	end := l.boff + int64(len(records))
	keep := int(end & (block - 1)) // the bytes of the last block
	if keep > len(records) {
		l.tail = append(l.tail, records...)
		return
	}
	l.tail = append(l.tail[:0], records[len(records)-keep:]...)
}

// undo cuts f back to before the batch after err: after a failed write or
// fdatasync the pages' state is unknown, so the file is cut and the cut
// made durable, and the records cannot come back at the next start. When
// even that fails the log is broken and the batch's fate unknown.
func (l *Log) undo(f *os.File, records int64, err error) error {
	if terr := l.truncate(f, l.boff); terr != nil {
		l.mu.Lock()
		l.broken = fmt.Errorf("%w: appending failed (%w) and cutting it back failed too (%w)", ErrBroken, err, terr)
		l.mu.Unlock()
		return fmt.Errorf("%w: appending %d bytes to log segment %s failed (%w) and cutting them back failed too (%w)",
			ErrUnsure, records, f.Name(), err, terr)
	}
	l.zeroed = l.boff
	return fmt.Errorf("cannot append %d bytes to log segment %s: %w", records, f.Name(), err)
}

func (l *Log) fault(op string) error {
	if l.opts.Fault != nil {
		return l.opts.Fault(op)
	}
	return nil
}

// truncate cuts f to size and syncs it.
func (l *Log) truncate(f *os.File, size int64) error {
	if err := l.fault("truncate"); err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

// roll creates segment n and makes it the one appended to, once the one
// before it is cut to its records (its zeros ahead go). The directory is
// synced: a segment whose name was lost would lose its records.
func (l *Log) roll(n uint32) error {
	if old := l.segs[l.last]; old != nil && l.zeroed > l.end {
		if err := l.truncate(old, l.end); err != nil {
			return fmt.Errorf("cannot cut log segment %s to its records: %w", old.Name(), err)
		}
		l.zeroed = l.end
	}
	f, err := os.OpenFile(l.path(n), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o640)
	if err != nil {
		return fmt.Errorf("cannot create log segment: %w", err)
	}
	if err := syncDir(l.opts.Dir); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if l.direct != nil {
		l.direct.Close()
		l.direct = nil
	}
	l.tail = l.tail[:0]
	l.mu.Lock()
	l.segs[n] = f
	l.closed += l.end
	l.last, l.end, l.zeroed = n, 0, 0
	l.mu.Unlock()
	return nil
}

// Size is the bytes of every committed record, framing included, and the
// number of segments they are in.
func (l *Log) Size() (bytes int64, segments int) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.closed + l.end, len(l.segs)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cannot sync the log directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("cannot sync the log directory %q: %w", dir, err)
	}
	return nil
}

// Read returns the payload of the committed record at pos, in buf when it
// fits (buf may be nil).
func (l *Log) Read(pos Pos, buf []byte) ([]byte, error) {
	l.mu.RLock()
	f := l.segs[pos.Segment()]
	l.mu.RUnlock()
	if f == nil {
		return nil, fmt.Errorf("seglog: no segment %d", pos.Segment())
	}
	var head [headerLen]byte
	if _, err := f.ReadAt(head[:], pos.Offset()); err != nil {
		return nil, fmt.Errorf("cannot read a record of %s at %d: %w", f.Name(), pos.Offset(), err)
	}
	n := binary.LittleEndian.Uint32(head[:])
	if n == 0 || n > MaxRecord {
		return nil, fmt.Errorf("seglog: no record in %s at %d", f.Name(), pos.Offset())
	}
	buf = slices.Grow(buf[:0], int(n))[:n]
	if _, err := f.ReadAt(buf, pos.Offset()+headerLen); err != nil {
		return nil, fmt.Errorf("cannot read a record of %s at %d: %w", f.Name(), pos.Offset(), err)
	}
	if crc32.Checksum(buf, castagnoli) != binary.LittleEndian.Uint32(head[4:]) {
		return nil, fmt.Errorf("seglog: the record in %s at %d fails its checksum", f.Name(), pos.Offset())
	}
	return buf, nil
}

// Scan calls fn with every committed record in order, as of the call (a
// record committed meanwhile may or may not be seen). fn must not keep rec.
func (l *Log) Scan(fn func(pos Pos, rec []byte) error) error {
	l.mu.RLock()
	last, end := l.last, l.end
	nums := make([]uint32, 0, len(l.segs))
	files := make(map[uint32]*os.File, len(l.segs))
	for n, f := range l.segs {
		nums = append(nums, n)
		files[n] = f
	}
	l.mu.RUnlock()
	slices.Sort(nums)
	var data []byte
	for _, n := range nums {
		if n > last {
			break
		}
		f := files[n]
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("cannot read log segment %s: %w", f.Name(), err)
		}
		size := st.Size()
		if n == last {
			size = end
		}
		data = slices.Grow(data[:0], int(size))[:size]
		if _, err := f.ReadAt(data, 0); err != nil {
			return fmt.Errorf("cannot read log segment %s: %w", f.Name(), err)
		}
		good, err := scan(data, func(off int64, rec []byte) error { return fn(makePos(n, off), rec) })
		if err != nil {
			return err
		}
		if good != size {
			return fmt.Errorf("seglog: segment %s is damaged at offset %d", f.Name(), good)
		}
	}
	return nil
}

// Close closes the segment files.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	if l.direct != nil {
		errs = append(errs, l.direct.Close())
		l.direct = nil
	}
	for _, f := range l.segs {
		errs = append(errs, f.Close())
	}
	l.segs = nil
	return errors.Join(errs...)
}
