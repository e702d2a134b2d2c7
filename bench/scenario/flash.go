// Package scenario holds the load generator's workloads: the flash sale
// (with replays and double submissions, optionally mixed with item reads)
// and browsing, and the verdict on a flash sale's correctness. It never
// sends a request itself: package loadgen does.
package scenario

import (
	"bytes"
	"hash/maphash"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Kind is what one request of a flash sale does.
type Kind uint8

const (
	Buy    Kind = iota // a user's first purchase, request id r1
	Double             // the same user, a second request id (r2), sent right after Buy
	Retry              // the user's Buy again, same request id: must replay
	Read               // GET the item
)

type spec struct {
	user int32
	kind Kind
}

// Result is what came back for one request.
type Result struct {
	Status   uint16 // 0: transport failure
	Replayed bool
	BodyHash uint64
	OrderID  uint64
}

// Flash is the flash-sale workload: users race to buy one item with per-user
// limit 1. Some retry their request (same request id) after all first
// attempts; some send two request ids at once. ReadPct percent of the
// requests read the item instead (the "mixed" scenario).
type Flash struct {
	Item   string
	Prefix string // user ids are Prefix-<n>, unique per run

	specs        []spec
	results      []Result
	seed         maphash.Seed
	itemURI      []byte
	purchaseURI  []byte
	bodyHead     []byte
	requestIDKey []byte
	soldOutAt    atomic.Int64 // Unix nanoseconds of the first sold_out answer
}

// SoldOutAt is when the first "sold out" answer came back (zero: none did).
func (f *Flash) SoldOutAt() time.Time {
	if ns := f.soldOutAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

var soldOutCode = []byte(`"sold_out"`)

// FlashOptions shapes the crowd.
type FlashOptions struct {
	Item      string
	Prefix    string
	Users     int
	RetryPct  int // users who send their request again, after everyone's first attempt
	DoublePct int // users who send a second request id at the same time
	ReadPct   int // share of requests that read the item
	Seed      uint64
}

// NewFlash lays out every request of the run in advance, so that sending
// them allocates nothing.
func NewFlash(o FlashOptions) *Flash {
	rng := rand.New(rand.NewPCG(o.Seed, 42))
	f := &Flash{Item: o.Item, Prefix: o.Prefix, seed: maphash.MakeSeed()}
	purchases := make([]spec, 0, o.Users*11/10)
	var retries []spec
	for u := 0; u < o.Users; u++ {
		purchases = append(purchases, spec{user: int32(u), kind: Buy})
		if rng.IntN(100) < o.DoublePct {
			purchases = append(purchases, spec{user: int32(u), kind: Double})
		}
		if rng.IntN(100) < o.RetryPct {
			retries = append(retries, spec{user: int32(u), kind: Retry})
		}
	}
	purchases = append(purchases, retries...)
	f.specs = purchases
	if o.ReadPct > 0 {
		f.specs = make([]spec, 0, len(purchases)*100/(100-min(o.ReadPct, 99)))
		for i := 0; i < len(purchases); {
			if rng.IntN(100) < o.ReadPct {
				f.specs = append(f.specs, spec{user: -1, kind: Read})
				continue
			}
			f.specs = append(f.specs, purchases[i])
			i++
		}
	}
	f.results = make([]Result, len(f.specs))
	f.itemURI = []byte("/api/v1/items/" + o.Item)
	f.purchaseURI = []byte("/api/v1/items/" + o.Item + "/purchase")
	f.bodyHead = []byte(`{"user_id":"` + o.Prefix + "-")
	f.requestIDKey = []byte(`","request_id":"r`)
	return f
}

// Requests is the number of requests of the run.
func (f *Flash) Requests() int { return len(f.specs) }

// Results are the answers, by request number, once the run is over.
func (f *Flash) Results() []Result { return f.results }

// Fill writes request n.
func (f *Flash) Fill(n int, req *fasthttp.Request) {
	s := f.specs[n]
	if s.kind == Read {
		req.SetRequestURIBytes(f.itemURI)
		return
	}
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURIBytes(f.purchaseURI)
	req.Header.SetContentType("application/json")
	var num [20]byte
	req.AppendBody(f.bodyHead)
	req.AppendBody(strconv.AppendInt(num[:0], int64(s.user), 10))
	req.AppendBody(f.requestIDKey)
	if s.kind == Double {
		req.AppendBodyString(`2"}`)
	} else {
		req.AppendBodyString(`1"}`)
	}
}

var orderIDKey = []byte(`"order_id":"`)

// Done records the answer to request n.
func (f *Flash) Done(n int, resp *fasthttp.Response, err error) {
	r := &f.results[n]
	if err != nil {
		*r = Result{}
		return
	}
	body := resp.Body()
	r.Status = uint16(resp.StatusCode())
	r.Replayed = len(resp.Header.Peek("Idempotent-Replayed")) > 0
	r.BodyHash = maphash.Bytes(f.seed, body)
	r.OrderID = 0
	if r.Status == fasthttp.StatusConflict && f.soldOutAt.Load() == 0 && bytes.Contains(body, soldOutCode) {
		f.soldOutAt.CompareAndSwap(0, time.Now().UnixNano())
	}
	if r.Status == fasthttp.StatusCreated {
		if i := bytes.Index(body, orderIDKey); i >= 0 {
			rest := body[i+len(orderIDKey):]
			if end := bytes.IndexByte(rest, '"'); end > 0 {
				r.OrderID, _ = strconv.ParseUint(string(rest[:end]), 10, 64)
			}
		}
	}
}

// UserID is the user id of user u in this run.
func (f *Flash) UserID(u int32) string { return f.Prefix + "-" + strconv.Itoa(int(u)) }

// Browse reads one item, again and again.
type Browse struct{ uri []byte }

func NewBrowse(item string) *Browse { return &Browse{uri: []byte("/api/v1/items/" + item)} }

func (b *Browse) Fill(_ int, req *fasthttp.Request)   { req.SetRequestURIBytes(b.uri) }
func (b *Browse) Done(int, *fasthttp.Response, error) {}
