package orderlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/engine/circuit"
	"github.com/flashsale/flashsale/persist/redisledger"
)

// Three edge engines and two writers; 20,000 users (a fifth of them on two
// nodes at once) race for 1,000 units: exactly 1,000 rows in MySQL, one
// per winning user, each the order its 201 carried, field for field; the
// ledger balanced with nothing pending, and nothing dead-lettered.
func TestFlashSaleThroughKafka(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	const stock, users = 1000, 20000
	var engines []*engine.Engine
	for n := 1; n <= 3; n++ {
		engines = append(engines, h.engine(n, h.producer(h.cfg), stock))
	}
	w1, _ := h.writer(WriterOptions{MaxBatch: 100})
	w2, _ := h.writer(WriterOptions{MaxBatch: 100})

	var mu sync.Mutex
	won := map[uint64]*engine.Order{}
	buy := func(e *engine.Engine, user string) {
		o, replayed, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: user, RequestID: "r", Quantity: 1})
		switch {
		case err == nil && !replayed:
			mu.Lock()
			won[o.ID] = o
			mu.Unlock()
		case err == nil, errors.Is(err, engine.ErrSoldOut), errors.Is(err, engine.ErrLimitExceeded), errors.Is(err, engine.ErrRequestInProgress):
		default:
			t.Errorf("purchase: %v", err)
		}
	}
	work := make(chan int, 1024)
	var wg sync.WaitGroup
	for range 48 {
		wg.Go(func() {
			for u := range work {
				buy(engines[u%3], fmt.Sprint("u", u))
				if u%5 == 0 {
					buy(engines[(u+1)%3], fmt.Sprint("u", u))
				}
			}
		})
	}
	for u := range users {
		work <- u
	}
	close(work)
	wg.Wait()
	// Units left in leases: give them back and sell them to late buyers.
	for _, e := range engines {
		e.GiveBackAll(ctx)
	}
	for u := 0; len(won) < stock && u < 10*stock; u++ {
		buy(engines[u%3], fmt.Sprint("late", u))
	}
	if len(won) != stock {
		t.Fatalf("%d orders won, want %d", len(won), stock)
	}
	h.waitRows(stock)
	rows, err := h.db.All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	users1 := map[string]bool{}
	for _, r := range rows {
		if users1[r.UserID] {
			t.Fatalf("user %s has two rows", r.UserID)
		}
		users1[r.UserID] = true
		want, ok := won[r.ID]
		if !ok {
			t.Fatalf("row %+v was never answered 201", r)
		}
		w := *want
		w.Status = engine.Persisted
		if *r != w {
			t.Fatalf("row differs from its 201\n row %+v\n 201 %+v", r, w)
		}
	}
	if a := h.audit(); a.Claimed != stock || a.Pending != 0 {
		t.Fatalf("audit after the sale: %+v", a)
	}
	var dead float64
	for _, w := range []*Writer{w1, w2} {
		dead += counter(w.Collectors(), "flashsale_writer_dead_letters_total")
	}
	if dead != 0 {
		t.Fatalf("%v dead letters in a clean sale", dead)
	}
}

// A writer killed after its rows are in MySQL but before its offsets are
// committed: the next writer gets the batch again; no row twice, none
// missing.
func TestWriterKilledMidBatch(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	e := h.engine(1, h.producer(h.cfg), 300)
	for u := range 300 {
		if _, _, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: fmt.Sprint("u", u), Quantity: 1}); err != nil {
			t.Fatal(err)
		}
	}
	crashed := make(chan struct{})
	_, stop := h.writer(WriterOptions{MaxBatch: 1000, crashAfterWrite: func() bool { close(crashed); return true }})
	<-crashed
	if err := stop(); !errors.Is(err, errCrashed) {
		t.Fatalf("first writer: %v", err)
	}
	before, _ := h.db.Count(ctx)
	if before == 0 {
		t.Fatal("the first writer wrote nothing before its crash")
	}
	w, _ := h.writer(WriterOptions{MaxBatch: 1000})
	for deadline := time.Now().Add(20 * time.Second); counter(w.Collectors(), "flashsale_writer_orders_stored_total") < 300; {
		if time.Now().After(deadline) {
			t.Fatal("the second writer did not get the uncommitted batch")
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.waitRows(300)
	if dup := counter(h.db.Collectors(), "flashsale_mysql_rows_duplicate_total"); dup < float64(before) {
		t.Fatalf("the batch was not redelivered: %v duplicates ignored, %d rows before the crash", dup, before)
	}
	if a := h.audit(); a.Pending != 0 || a.Claimed != 300 {
		t.Fatalf("audit: %+v", a)
	}
}

// A node that dies between its Redis claim and the Kafka ack: a claim
// whose record never reached Kafka is abandoned by the reconciler once the
// writers have passed the deadline (its unit back in the pool, the user's
// slot free); a claim whose record did reach Kafka is stored and kept.
func TestNodeDiesBetweenClaimAndAck(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	l := h.ledger(7)
	if err := l.PutItem(ctx, "it", 10); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Lease(ctx, "it", 2); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	lost := &engine.Order{ID: 1001, ItemID: "it", UserID: "lost", Quantity: 1, PriceCents: 500, RequestID: "r1", CreatedAt: now}
	landed := &engine.Order{ID: 1002, ItemID: "it", UserID: "landed", Quantity: 1, PriceCents: 500, CreatedAt: now}
	for _, o := range []*engine.Order{lost, landed} {
		if _, err := l.Claim(ctx, o, 1); err != nil {
			t.Fatal(err)
		}
	}
	// Only landed's record reaches Kafka; the node dies before either ack.
	if err := h.producer(h.cfg).Append(ctx, landed); err != nil {
		t.Fatal(err)
	}
	h.writer(WriterOptions{})

	cfg := h.cfg
	cfg.Timeout = 50 * time.Millisecond // the margin: 2 x (50 ms + grace) + skew
	g, err := NewGapReconciler(GapOptions{Kafka: cfg, Ledger: h.ledger(0), Skew: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// Before the margin has passed, nothing is abandoned.
	if res, err := g.Pass(ctx, []string{"it"}); err != nil || res.Abandoned != 0 {
		t.Fatalf("first pass: %+v %v", res, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for abandoned := 0; abandoned == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the lost claim was never abandoned")
		}
		time.Sleep(100 * time.Millisecond)
		res, err := g.Pass(ctx, []string{"it"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Abandoned > 1 {
			t.Fatalf("abandoned %d claims", res.Abandoned)
		}
		abandoned = res.Abandoned
	}
	h.waitRows(1)
	if o, ok, _ := h.db.Order(ctx, landed.ID); !ok || o.UserID != "landed" {
		t.Fatal("the order that reached Kafka is not stored")
	}
	a := h.audit()
	if a.Claimed != 1 || a.Pending != 0 || a.Remaining != 9 || a.Leases["7"] != 0 {
		t.Fatalf("after reconciliation: %+v (want 1 claimed, the lost unit back in the pool)", a)
	}
	// The lost user's slot and request id are free again.
	if _, _, err := l.Lease(ctx, "it", 1); err != nil {
		t.Fatal(err)
	}
	if first, err := l.Claim(ctx, &engine.Order{ID: 1003, ItemID: "it", UserID: "lost", Quantity: 1, RequestID: "r1", CreatedAt: now}, 1); err != nil || first != nil {
		t.Fatalf("claim again after abandon: %v %v", first, err)
	}
}

// The produce that fails for the producer but lands at the broker later
// (the unknown outcome): the purchase gets 503 and its claim is undone;
// the record that lands afterwards is refused by the writers and
// dead-lettered, so the unit is never sold twice.
func TestLateRecordIsRefused(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	release := make(chan struct{})
	var slept atomic.Bool
	h.kf.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if slept.CompareAndSwap(false, true) {
			h.kf.SleepControl(func() { <-release })
		} else {
			h.kf.DropControl()
		}
		return nil, nil, false
	})
	e := h.engine(1, h.producer(h.cfg), 5) // produce deadline 1 s, franz-go's least
	_, _, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: "u", RequestID: "r", Quantity: 1})
	if engine.CodeOf(err) != engine.CodeUnavailable {
		t.Fatalf("a produce without an ack: %v", err)
	}
	if a := h.audit(); a.Claimed != 0 || a.Pending != 0 {
		t.Fatalf("the claim was not undone: %+v", a)
	}
	close(release) // the record lands now
	w, _ := h.writer(WriterOptions{})
	dead := h.deadLetters(1)
	if r := header(dead[0], "reason"); r != "claim_aborted" {
		t.Fatalf("dead letter reason %q", r)
	}
	if n, _ := h.db.Count(ctx); n != 0 {
		t.Fatalf("%d rows stored for an undone purchase", n)
	}
	// The unit sells again, once.
	if _, _, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: "u", RequestID: "r2", Quantity: 1}); err != nil {
		t.Fatalf("buying again: %v", err)
	}
	h.waitRows(1)
	if counter(w.Collectors(), "flashsale_writer_dead_letters_total") != 1 {
		t.Fatal("dead letters not counted")
	}
}

// Broker down: purchases get 503 and nothing is taken; after a few the
// circuit opens and they are refused at once, without a produce; when the
// broker is back the node recovers and its orders are stored.
func TestBrokerDown(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, kfake.DataDir(dir))
	ctx := context.Background()
	p := h.producer(h.cfg)
	sink := circuit.New("kafka", p, circuit.Options{Failures: 2, Slow: time.Second, CoolDown: 300 * time.Millisecond})
	e := h.engine(1, sink, 100)
	if _, _, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: "before", Quantity: 1}); err != nil {
		t.Fatal(err)
	}
	port := portOf(t, h.kf.ListenAddrs()[0])
	h.kf.Close()

	for i := range 3 {
		_, _, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: fmt.Sprint("down", i), Quantity: 1})
		if engine.CodeOf(err) != engine.CodeUnavailable {
			t.Fatalf("purchase %d with the broker down: %v", i, err)
		}
	}
	if sink.State() != 2 {
		t.Fatalf("circuit state %v after failures, want open", sink.State())
	}
	produces := histogramCount(p.seconds)
	if _, _, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: "open", Quantity: 1}); engine.CodeOf(err) != engine.CodeUnavailable {
		t.Fatalf("with the circuit open: %v", err)
	}
	if histogramCount(p.seconds) != produces {
		t.Fatal("a purchase with the circuit open still tried Kafka")
	}
	if a := h.audit(); a.Claimed != 1 || a.Pending != 1 {
		t.Fatalf("something was taken while the broker was down: %+v", a)
	}
	if v, _ := e.Item("it"); v.Pending != 0 {
		t.Fatalf("engine holds reservations: %+v", v)
	}

	h.startKafka(kfake.DataDir(dir), kfake.Ports(port))
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: "after", Quantity: 1})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the broker came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.writer(WriterOptions{})
	h.waitRows(2)
	if a := h.audit(); a.Claimed != 2 || a.Pending != 0 {
		t.Fatalf("after recovery: %+v", a)
	}
}

// Poison: a record that is no order, and an order with no claim behind it,
// go to the dead-letter topic with their reasons; the stream moves on.
func TestPoisonGoesToDeadLetters(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	raw, err := kgo.NewClient(kgo.SeedBrokers(h.cfg.Brokers...), kgo.DefaultProduceTopic(h.cfg.Topic))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	ghost, _ := Encode(&engine.Order{ID: 99, ItemID: "it", UserID: "ghost", Quantity: 1, CreatedAt: time.Now()})
	if err := raw.ProduceSync(ctx, &kgo.Record{Key: []byte("x"), Value: []byte("\x00not json")},
		&kgo.Record{Key: []byte("ghost"), Value: ghost}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	e := h.engine(1, h.producer(h.cfg), 5)
	if _, _, err := e.Purchase(ctx, engine.PurchaseRequest{ItemID: "it", UserID: "real", Quantity: 1}); err != nil {
		t.Fatal(err)
	}
	w, _ := h.writer(WriterOptions{})
	h.waitRows(1)
	reasons := map[string]bool{}
	for _, r := range h.deadLetters(2) {
		reasons[header(r, "reason")] = true
		if header(r, "source") == "" || header(r, "detail") == "" {
			t.Fatalf("dead letter without its source or detail: %v", r.Headers)
		}
	}
	if !reasons["undecodable"] || !reasons[redisledger.Unknown.String()] {
		t.Fatalf("dead letter reasons: %v", reasons)
	}
	if n := counter(w.Collectors(), "flashsale_writer_dead_letters_total"); n != 2 {
		t.Fatalf("%v dead letters counted", n)
	}
}
