package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/internal/mysqltest"
	"github.com/flashsale/flashsale/internal/promtest"
	"github.com/flashsale/flashsale/internal/redistest"
	"github.com/flashsale/flashsale/ledger"
	"github.com/flashsale/flashsale/persist/kafkasink"
	"github.com/flashsale/flashsale/persist/mysqlstore"
	"github.com/flashsale/flashsale/persist/orderlog"
	"github.com/flashsale/flashsale/persist/reconcile"
	"github.com/flashsale/flashsale/persist/redisledger"
)

// These tests run a whole cluster in one process, built as the command
// builds it (NewEdge, NewWriter): kfake for Kafka, and the real Redis and
// MariaDB, with keys and a database of the test's own.

// cluster is the shared part of a test's cluster.
type cluster struct {
	t   *testing.T
	kf  *kfake.Cluster
	cfg Config            // every node's configuration, less its role and node id
	db  *mysqlstore.Store // the order database, to read back
}

func newCluster(t *testing.T, kopts ...kfake.Opt) *cluster {
	t.Helper()
	rc := redistest.Client(t)
	c := &cluster{t: t, cfg: DefaultConfig()}
	c.cfg.RedisAddr, c.cfg.Redis.Prefix = redistest.Addr(), redistest.Prefix(t, rc)
	c.cfg.MySQL.DSN, c.cfg.MySQL.Tables, c.cfg.MySQL.Workers = mysqltest.DSN(t), 8, 4
	c.cfg.Kafka.Partitions, c.cfg.Kafka.Timeout = 4, time.Second
	c.cfg.Server.ShutdownDelay = 0
	c.startKafka(kopts...)
	db, err := mysqlstore.Open(context.Background(), c.cfg.MySQL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c.db = db
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := orderlog.EnsureTopics(ctx, c.cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *cluster) startKafka(kopts ...kfake.Opt) {
	kf, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, kopts...)...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.kf = kf
	c.t.Cleanup(kf.Close)
	c.cfg.Kafka.Brokers = kf.ListenAddrs()
}

// edge starts edge node id, with tweak applied to its configuration, and
// puts item "it" with stock units on it.
func (c *cluster) edge(id int, stock int64, tweak ...func(*Config)) *Edge {
	c.t.Helper()
	cfg := c.cfg
	cfg.Engine.NodeID = id
	for _, f := range tweak {
		f(&cfg)
	}
	e, err := NewEdge(context.Background(), cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(e.Stop)
	if _, _, err := e.engine.PutItem(context.Background(), engine.Item{ID: "it", Name: "x", PriceCents: 500, Stock: stock, PerUserLimit: 1}); err != nil {
		c.t.Fatal(err)
	}
	return e
}

// writer starts a writer with batch records per batch (0: the default).
func (c *cluster) writer(batch int) *Writer {
	c.t.Helper()
	cfg := c.cfg
	cfg.Role, cfg.AdminListen = RoleWriter, "127.0.0.1:0"
	if batch > 0 {
		cfg.Writer.MaxBatch = batch
	}
	w, err := NewWriter(context.Background(), cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	adm, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		c.t.Fatal(err)
	}
	go w.Serve(adm)
	c.t.Cleanup(w.Stop)
	return w
}

// ledger is node id's view of the ledger, with claims tracked.
func (c *cluster) ledger(id int) *redisledger.Ledger {
	return redisledger.New(redistest.Client(c.t), id, c.cfg.ledgerOptions())
}

// waitRows waits until the orders tables hold n rows.
func (c *cluster) waitRows(n int64) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := c.db.Count(context.Background())
		if err == nil && got == n {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("orders tables hold %d rows (%v), want %d", got, err, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *cluster) audit() ledger.Audit {
	c.t.Helper()
	a, err := c.ledger(0).Audit(context.Background(), "it")
	if err != nil {
		c.t.Fatal(err)
	}
	if !a.Balanced() {
		c.t.Fatalf("ledger out of balance: %+v", a)
	}
	return a
}

// deadLetters reads the dead-letter topic until it holds n records.
func (c *cluster) deadLetters(n int) []*kgo.Record {
	c.t.Helper()
	k := c.cfg.Kafka.WithDefaults()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...), kgo.ConsumeTopics(k.DLQTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		c.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		f := cl.PollFetches(ctx)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			c.t.Fatalf("dead letters: %d, want %d", len(out), n)
		}
		out = append(out, f.Records()...)
	}
	return out
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func buy(e *Edge, user, requestID string) (*engine.Order, bool, error) {
	return e.engine.Purchase(context.Background(), engine.PurchaseRequest{ItemID: "it", UserID: user, RequestID: requestID, Quantity: 1})
}

// Three edge nodes and two writers; 20,000 users (a fifth of them on two
// nodes at once) race for 1,000 units: exactly 1,000 rows in MySQL, one
// per winning user, each the order its 201 carried, field for field; the
// ledger balanced with nothing pending, and nothing dead-lettered.
func TestFlashSaleThroughKafka(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	const stock, users = 1000, 20000
	var edges []*Edge
	for n := 1; n <= 3; n++ {
		edges = append(edges, c.edge(n, stock))
	}
	writers := []*Writer{c.writer(100), c.writer(100)}

	var mu sync.Mutex
	won := map[uint64]*engine.Order{}
	purchase := func(e *Edge, user string) {
		o, replayed, err := buy(e, user, "r")
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
				purchase(edges[u%3], fmt.Sprint("u", u))
				if u%5 == 0 {
					purchase(edges[(u+1)%3], fmt.Sprint("u", u))
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
	for _, e := range edges {
		e.engine.GiveBackAll(ctx)
	}
	for u := 0; len(won) < stock && u < 10*stock; u++ {
		purchase(edges[u%3], fmt.Sprint("late", u))
	}
	if len(won) != stock {
		t.Fatalf("%d orders won, want %d", len(won), stock)
	}
	c.waitRows(stock)
	rows, err := c.db.All(ctx)
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
	if a := c.audit(); a.Claimed != stock || a.Pending != 0 {
		t.Fatalf("audit after the sale: %+v", a)
	}
	var dead float64
	for _, w := range writers {
		dead += promtest.Value(w.registry, "flashsale_writer_dead_letters_total")
	}
	if dead != 0 {
		t.Fatalf("%v dead letters in a clean sale", dead)
	}
}

// A writer killed after its rows are in MySQL but before its offsets are
// committed (the broker never acknowledges its commit): the next writer
// gets the batch again; no row twice, none missing.
func TestWriterKilledMidBatch(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	e := c.edge(1, 300)
	for u := range 300 {
		if _, _, err := buy(e, fmt.Sprint("u", u), ""); err != nil {
			t.Fatal(err)
		}
	}
	// The first commit is held at the broker, then its connection dropped:
	// never applied. Later commits (the second writer's) go through.
	committing, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	c.kf.ControlKey(int16(kmsg.OffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		if !first.CompareAndSwap(false, true) {
			return nil, nil, false
		}
		close(committing)
		c.kf.SleepControl(func() { <-release })
		return nil, errors.New("the writer died before its commit"), true
	})
	w1 := c.writer(1000)
	<-committing
	before, _ := c.db.Count(ctx)
	if before == 0 {
		t.Fatal("the first writer wrote nothing before its commit")
	}
	// Stop it while its commit hangs (its batch is left uncommitted), then
	// let the broker drop the connection.
	time.AfterFunc(300*time.Millisecond, func() { close(release) })
	w1.Stop()
	w := c.writer(1000)
	for deadline := time.Now().Add(20 * time.Second); promtest.Value(w.registry, "flashsale_writer_orders_stored_total") < 300; {
		if time.Now().After(deadline) {
			t.Fatal("the second writer did not get the uncommitted batch")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.waitRows(300)
	if dup := promtest.Value(w.registry, "flashsale_mysql_rows_duplicate_total"); dup < float64(before) {
		t.Fatalf("the batch was not redelivered: %v duplicates ignored, %d rows before the crash", dup, before)
	}
	if a := c.audit(); a.Pending != 0 || a.Claimed != 300 {
		t.Fatalf("audit: %+v", a)
	}
}

// A node that dies between its Redis claim and the Kafka ack: a claim
// whose record never reached Kafka is abandoned by the reconciler once the
// writers have passed the deadline (its unit back in the pool, the user's
// slot free); a claim whose record did reach Kafka is stored and kept.
func TestNodeDiesBetweenClaimAndAck(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	l := c.ledger(7)
	if err := l.PutItem(ctx, "it", 10, false); err != nil {
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
	p, err := kafkasink.NewProducer(c.cfg.Kafka, kafkasink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	if err := p.Append(ctx, landed); err != nil {
		t.Fatal(err)
	}
	c.writer(0)

	k := c.cfg.Kafka
	k.Timeout = 50 * time.Millisecond // the margin: 2 x (50 ms + grace) + skew
	g, err := reconcile.NewGap(reconcile.GapOptions{Kafka: k, Ledger: c.ledger(0), Skew: 10 * time.Millisecond})
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
	c.waitRows(1)
	if o, ok, _ := c.db.Order(ctx, landed.ID); !ok || o.UserID != "landed" {
		t.Fatal("the order that reached Kafka is not stored")
	}
	a := c.audit()
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
	c := newCluster(t)
	release := make(chan struct{})
	var slept atomic.Bool
	c.kf.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if slept.CompareAndSwap(false, true) {
			c.kf.SleepControl(func() { <-release })
		} else {
			c.kf.DropControl()
		}
		return nil, nil, false
	})
	e := c.edge(1, 5) // produce deadline 1 s, franz-go's least
	_, _, err := buy(e, "u", "r")
	if engine.CodeOf(err) != engine.CodeUnavailable {
		t.Fatalf("a produce without an ack: %v", err)
	}
	if a := c.audit(); a.Claimed != 0 || a.Pending != 0 {
		t.Fatalf("the claim was not undone: %+v", a)
	}
	close(release) // the record lands now
	w := c.writer(0)
	dead := c.deadLetters(1)
	if r := header(dead[0], "reason"); r != "claim_aborted" {
		t.Fatalf("dead letter reason %q", r)
	}
	if n, _ := c.db.Count(context.Background()); n != 0 {
		t.Fatalf("%d rows stored for an undone purchase", n)
	}
	// The unit sells again, once.
	if _, _, err := buy(e, "u", "r2"); err != nil {
		t.Fatalf("buying again: %v", err)
	}
	c.waitRows(1)
	if promtest.Value(w.registry, "flashsale_writer_dead_letters_total") != 1 {
		t.Fatal("dead letters not counted")
	}
}

// Broker down: purchases get 503 and nothing is taken; after a few the
// circuit opens and they are refused at once, without a produce; when the
// broker is back the node recovers and its orders are stored.
func TestBrokerDown(t *testing.T) {
	dir := t.TempDir()
	c := newCluster(t, kfake.DataDir(dir))
	e := c.edge(1, 100, func(cfg *Config) {
		cfg.Breaker.Failures, cfg.Breaker.CoolDown = 2, 300*time.Millisecond
	})
	if _, _, err := buy(e, "before", ""); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(c.kf.ListenAddrs()[0])
	c.kf.Close()

	for i := range 3 {
		if _, _, err := buy(e, fmt.Sprint("down", i), ""); engine.CodeOf(err) != engine.CodeUnavailable {
			t.Fatalf("purchase %d with the broker down: %v", i, err)
		}
	}
	if state := promtest.Value(e.registry, "flashsale_circuit_state", "dependency", "kafka"); state != 2 {
		t.Fatalf("kafka's circuit state %v after failures, want open", state)
	}
	produces := promtest.Value(e.registry, "flashsale_kafka_produce_seconds")
	if _, _, err := buy(e, "open", ""); engine.CodeOf(err) != engine.CodeUnavailable {
		t.Fatalf("with the circuit open: %v", err)
	}
	if promtest.Value(e.registry, "flashsale_kafka_produce_seconds") != produces {
		t.Fatal("a purchase with the circuit open still tried Kafka")
	}
	if a := c.audit(); a.Claimed != 1 || a.Pending != 1 {
		t.Fatalf("something was taken while the broker was down: %+v", a)
	}
	if v, _ := e.engine.Item("it"); v.Pending != 0 {
		t.Fatalf("engine holds reservations: %+v", v)
	}

	p, _ := strconv.Atoi(port)
	c.startKafka(kfake.DataDir(dir), kfake.Ports(p))
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, err := buy(e, "after", "")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the broker came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.writer(0)
	c.waitRows(2)
	if a := c.audit(); a.Claimed != 2 || a.Pending != 0 {
		t.Fatalf("after recovery: %+v", a)
	}
}

// Poison: a record that is no order, and an order with no claim behind it,
// go to the dead-letter topic with their reasons; the stream moves on.
func TestPoisonGoesToDeadLetters(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	raw, err := kgo.NewClient(kgo.SeedBrokers(c.cfg.Kafka.Brokers...), kgo.DefaultProduceTopic(c.cfg.Kafka.Topic))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	ghost, _ := orderlog.Encode(&engine.Order{ID: 99, ItemID: "it", UserID: "ghost", Quantity: 1, CreatedAt: time.Now()})
	if err := raw.ProduceSync(ctx, &kgo.Record{Key: []byte("x"), Value: []byte("\x00not json")},
		&kgo.Record{Key: []byte("ghost"), Value: ghost}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	e := c.edge(1, 5)
	if _, _, err := buy(e, "real", ""); err != nil {
		t.Fatal(err)
	}
	w := c.writer(0)
	c.waitRows(1)
	reasons := map[string]bool{}
	for _, r := range c.deadLetters(2) {
		reasons[header(r, "reason")] = true
		if header(r, "source") == "" || header(r, "detail") == "" {
			t.Fatalf("dead letter without its source or detail: %v", r.Headers)
		}
	}
	if !reasons["undecodable"] || !reasons[ledger.Unknown.String()] {
		t.Fatalf("dead letter reasons: %v", reasons)
	}
	if n := promtest.Value(w.registry, "flashsale_writer_dead_letters_total"); n != 2 {
		t.Fatalf("%v dead letters counted", n)
	}
}

// Redis loses the cluster's data in the middle of a sale (every key of the
// cluster deleted, as a FLUSHALL or a restart without persistence would):
// every node stops selling (503 and the metric), an operator's
// PUT of the item with its original stock is refused and, once one node has
// rebuilt the ledger from the orders of record, selling resumes without
// selling a unit twice: the orders never exceed the stock, every 201 is a
// row, the winners before the loss replay, and the audit balances.
func TestRedisLosesItsData(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	const stock = 1000
	edges := []*Edge{c.edge(1, stock), c.edge(2, stock)}
	c.writer(100)

	var mu sync.Mutex
	won := map[uint64]*engine.Order{}
	first := map[string]*engine.Order{} // user -> their 201
	var lost, replays atomic.Int64
	purchase := func(e *Edge, user string) {
		o, replayed, err := buy(e, user, "r-"+user)
		switch {
		case err == nil && replayed:
			replays.Add(1)
			mu.Lock()
			if w := first[user]; w != nil && w.ID != o.ID {
				t.Errorf("user %s replayed order %d, won %d", user, o.ID, w.ID)
			}
			mu.Unlock()
		case err == nil:
			mu.Lock()
			if won[o.ID] != nil || first[user] != nil {
				t.Errorf("user %s won twice", user)
			}
			won[o.ID], first[user] = o, o
			mu.Unlock()
		case errors.Is(err, engine.ErrLedgerLost):
			lost.Add(1)
		case errors.Is(err, engine.ErrSoldOut), errors.Is(err, engine.ErrLimitExceeded), errors.Is(err, engine.ErrRequestInProgress),
			errors.Is(err, engine.ErrUnavailable):
		default:
			t.Errorf("purchase: %v", err)
		}
	}
	sold := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(won)
	}
	// Buyers never stop: before, during and after the loss.
	stop := make(chan struct{})
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				u := next.Add(1)
				purchase(edges[(int(u)+w)%2], fmt.Sprint("u", u))
				time.Sleep(time.Millisecond)
			}
		})
	}
	for sold() < 600 {
		time.Sleep(time.Millisecond)
	}
	redistest.Flush(redistest.Client(t), c.cfg.Redis.Prefix)
	before := sold()
	waitFor(t, "every node to stop selling", func() bool {
		return promtest.Value(edges[0].registry, "flashsale_ledger_lost") == 1 && promtest.Value(edges[1].registry, "flashsale_ledger_lost") == 1
	})
	for _, e := range edges {
		if v := promtest.Value(e.registry, "flashsale_ledger_lost"); v != 1 {
			t.Fatalf("flashsale_ledger_lost = %v while the ledger is lost", v)
		}
	}
	// The hurried operator: the item again, with its original stock.
	if _, _, err := edges[1].engine.PutItem(ctx, engine.Item{ID: "it", Name: "x", PriceCents: 500, Stock: stock, PerUserLimit: 1}); !errors.Is(err, engine.ErrLedgerLost) {
		t.Fatalf("PUT of the item during the loss: %v, want the ledger lost", err)
	}
	waitFor(t, "the rebuild", func() bool {
		return !edges[0].engine.LedgerLost() && !edges[1].engine.LedgerLost()
	})
	if _, _, err := edges[1].engine.PutItem(ctx, engine.Item{ID: "it", Name: "x", PriceCents: 500, Stock: stock, PerUserLimit: 1}); err != nil {
		t.Fatalf("PUT of the item after the rebuild: %v", err)
	}
	// Winners before the loss replay on either node.
	mu.Lock()
	var early []*engine.Order
	for _, o := range first {
		if len(early) < 50 {
			early = append(early, o)
		}
	}
	mu.Unlock()
	for i, o := range early {
		got, replayed, err := buy(edges[i%2], o.UserID, o.RequestID)
		if err != nil || !replayed || got.ID != o.ID {
			t.Fatalf("a winner's retry after the rebuild: %+v replayed %v, %v; won %+v", got, replayed, err, o)
		}
	}
	waitFor(t, "the sale to sell out", func() bool { return sold() >= stock })
	close(stop)
	wg.Wait()
	for _, e := range edges {
		e.engine.GiveBackAll(ctx)
	}
	for u := 0; sold() < stock && u < 10*stock; u++ {
		purchase(edges[u%2], fmt.Sprint("late", u))
	}
	if n := sold(); n != stock {
		t.Fatalf("%d orders answered 201 for a stock of %d (%d before the loss)", n, stock, before)
	}
	c.waitRows(stock)
	rows, err := c.db.All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if won[r.ID] == nil {
			t.Fatalf("row %+v was never answered 201", r)
		}
	}
	if a := c.audit(); a.Claimed != stock || a.Total != stock {
		t.Fatalf("audit after the sale: %+v", a)
	}
	var rebuilds float64
	for _, e := range edges {
		rebuilds += promtest.Value(e.registry, "flashsale_ledger_rebuilds_total")
	}
	if rebuilds < 1 {
		t.Fatal("no rebuild counted")
	}
	t.Logf("%d sold before the loss, %d purchases answered 503 while it was rebuilt, %d replays", before, lost.Load(), replays.Load())
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30 s for %s", what)
		}
	}
}

// A failover to a replica that had not got the last writes: Redis goes back
// to an earlier state of the same generation (its pools, claims and users
// as they were before the last sales). The writers find orders whose claims
// the ledger does not have, store them (their purchases were answered 201)
// and condemn the ledger; it is rebuilt counting them, and the sale ends at
// exactly the stock.
func TestFailoverToALaggingReplica(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	const stock = 50
	e := c.edge(1, stock)
	c.buyN(e, "early", 10)
	failover := c.replicaOf("it") // the replica's copy: taken now, before the last sales reach it
	late := c.buyN(e, "late", 15) // their records wait in Kafka: no writer runs
	failover()
	w := c.writer(0)
	waitFor(t, "the writer to condemn the ledger and a node to rebuild it", func() bool {
		return promtest.Value(e.registry, "flashsale_ledger_rebuilds_total") >= 1 && !e.engine.LedgerLost()
	})
	if n := promtest.Value(w.registry, "flashsale_writer_orders_of_lost_ledger_total"); n != float64(late) {
		t.Fatalf("%v orders stored of the lost writes, want %d", n, late)
	}
	rest := c.buyN(e, "rest", 200)
	e.engine.GiveBackAll(ctx)
	rest += c.buyN(e, "last", 200)
	if total := 10 + late + rest; total != stock {
		t.Fatalf("%d orders answered 201 for a stock of %d", total, stock)
	}
	c.waitRows(stock)
	if a := c.audit(); a.Claimed != stock {
		t.Fatalf("audit: %+v", a)
	}
}

// buyN has n new users (prefix0, prefix1...) buy one unit each on e, and
// says how many won; sold out and 503s are expected, anything else fails.
func (c *cluster) buyN(e *Edge, prefix string, n int) int {
	c.t.Helper()
	won := 0
	for u := 0; u < n; u++ {
		_, replayed, err := buy(e, fmt.Sprint(prefix, u), "r")
		switch {
		case err == nil && !replayed:
			won++
		case errors.Is(err, engine.ErrSoldOut), errors.Is(err, engine.ErrLedgerLost), errors.Is(err, engine.ErrUnavailable):
		default:
			c.t.Fatalf("purchase: %v", err)
		}
	}
	return won
}

// replicaOf copies item's keys as they are now, as a replica that gets no
// more writes would hold them; failover makes Redis that replica.
func (c *cluster) replicaOf(item string) (failover func()) {
	c.t.Helper()
	ctx := context.Background()
	rc := redistest.Client(c.t)
	keys, err := rc.Do(ctx, rc.B().Keys().Pattern("{"+c.cfg.Redis.Prefix+":"+item+"}*").Build()).AsStrSlice()
	if err != nil || len(keys) == 0 {
		c.t.Fatalf("the item's keys: %v %v", keys, err)
	}
	snapshot := map[string]string{}
	for _, k := range keys {
		if v, err := rc.Do(ctx, rc.B().Dump().Key(k).Build()).ToString(); err == nil {
			snapshot[k] = v
		}
	}
	return func() {
		for _, k := range keys {
			rc.Do(ctx, rc.B().Del().Key(k).Build())
			if v, ok := snapshot[k]; ok {
				if err := rc.Do(ctx, rc.B().Restore().Key(k).Ttl(0).SerializedValue(v).Replace().Build()).Error(); err != nil {
					c.t.Fatal(err)
				}
			}
		}
	}
}

// A claim made just before Redis loses its data, whose produce then fails
// (503): the other node learnt the winner from the claim's event, and no
// release event can come. After the rebuild no node replays that order: a
// retry is a purchase afresh, and every 201 is a row.
func TestAbortedClaimIsNotReplayedAfterARebuild(t *testing.T) {
	c := newCluster(t)
	release := make(chan struct{})
	var held atomic.Bool
	e1, e2 := c.edge(1, 5), c.edge(2, 5)
	c.writer(0)
	time.Sleep(300 * time.Millisecond)
	c.kf.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if held.CompareAndSwap(false, true) {
			c.kf.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	done := make(chan error)
	go func() { _, _, err := buy(e1, "u", "r"); done <- err }()
	time.Sleep(300 * time.Millisecond) // the claim is made, and its event reached e2
	redistest.Flush(redistest.Client(t), c.cfg.Redis.Prefix)
	if err := <-done; !errors.Is(err, engine.ErrUnavailable) && !errors.Is(err, engine.ErrLedgerLost) {
		t.Fatalf("the purchase whose produce failed: %v, want a 503", err)
	}
	close(release)
	waitFor(t, "the rebuild", func() bool {
		return promtest.Value(e1.registry, "flashsale_ledger_rebuilds_total")+promtest.Value(e2.registry, "flashsale_ledger_rebuilds_total") >= 1 &&
			!e1.engine.LedgerLost() && !e2.engine.LedgerLost()
	})
	won := 0
	for _, e := range []*Edge{e2, e1} {
		_, replayed, err := buy(e, "u", "r")
		switch {
		case err == nil && replayed && won == 0:
			t.Fatal("a replayed 201 of an order answered 503")
		case err == nil && !replayed:
			won++
		}
	}
	if won != 1 {
		t.Fatalf("the retries after the rebuild won %d orders, want one (the first answered 503)", won)
	}
	c.waitRows(1)
}

// A cluster of an earlier version (pools without a generation, items only
// in Redis's catalogue, no generation of record) upgraded in place: the
// first node records the items, one rebuild gives the ledger a generation,
// and the sale goes on without a second.
func TestUpgradeOfALedgerWithoutGeneration(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	rc := redistest.Client(t)
	old := redisledger.New(rc, 0, c.cfg.ledgerOptions()) // Generation "": the earlier scripts
	if err := old.PutItem(ctx, "it", 10, false); err != nil {
		t.Fatal(err)
	}
	if err := redisledger.NewCatalog(rc, c.cfg.Redis.Prefix, redisledger.DefaultCacheTTL).SaveItem(ctx,
		engine.Item{ID: "it", Name: "x", PriceCents: 500, Stock: 10, PerUserLimit: 1}); err != nil {
		t.Fatal(err)
	}
	cfg := c.cfg
	cfg.Engine.NodeID = 1
	e, err := NewEdge(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	c.writer(0)
	won := 0
	for u := 0; won < 10; u++ {
		if u > 2000 {
			t.Fatalf("%d of 10 sold after the upgrade", won)
		}
		if _, _, err := buy(e, fmt.Sprint("u", u), ""); err == nil {
			won++
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := promtest.Value(e.registry, "flashsale_ledger_rebuilds_total"); n != 1 {
		t.Fatalf("%v rebuilds for one upgrade", n)
	}
	c.waitRows(10)
}

// A failover to a lagging replica while the writer runs all along (as in
// production): the last claims and the writer's marks of them are lost
// together, so no record comes back to find them missing. The pools' claim
// sequences, which only grow, show it: the first claim on the replica comes
// back at or below one seen before (the node refuses it and condemns the
// ledger), the ledger is rebuilt, and the sale ends at exactly the stock.
func TestFailoverToALaggingReplicaWhileTheWriterRuns(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	const stock = 50
	e := c.edge(1, stock)
	c.writer(0)
	c.buyN(e, "early", 10)
	c.waitRows(10)
	failover := c.replicaOf("it")
	late := c.buyN(e, "late", 15)
	c.waitRows(int64(10 + late)) // stored, marked, committed: nothing will come back
	failover()
	sold := 10 + late + c.buyN(e, "rest", 200)
	waitFor(t, "the rebuild", func() bool {
		return promtest.Value(e.registry, "flashsale_ledger_rebuilds_total") >= 1 && !e.engine.LedgerLost()
	})
	sold += c.buyN(e, "after", 200)
	e.engine.GiveBackAll(ctx)
	sold += c.buyN(e, "last", 200)
	if sold != stock {
		t.Fatalf("%d orders answered 201 for a stock of %d", sold, stock)
	}
	c.waitRows(stock)
}
