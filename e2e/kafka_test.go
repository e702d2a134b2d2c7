package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/flashsale/ledger"
	"github.com/flashsale/flashsale/persist/mysqlstore"
)

// TestClusterThroughKafka runs the whole cluster as processes: a Redis of
// the test's own, a Kafka, the real MariaDB, two edge nodes and a writer.
// Mid-sale the writer is killed with SIGKILL and restarted, and one edge
// node is killed with SIGKILL while it has purchases between their claim
// and their ack. Afterwards: every 201 is a row in MySQL with the same
// fields and status persisted, nobody holds two units, no units are
// stranded (the dead node's leases and pending claims are settled), and the
// surviving node sells the rest: exactly the stock, once.
//
// Kafka is the dev broker (franz-go's kfake), then librdkafka's mock
// cluster, a second implementation none of our code depends on, with kcat
// (librdkafka too) reading the orders topic and the dead letters as an
// independent client: every row in MySQL is a record in the topic, and a
// record kcat wrote that is no order is dead-lettered with its reason.
func TestClusterThroughKafka(t *testing.T) {
	t.Run("devbroker", func(t *testing.T) { clusterThroughKafka(t, startDevBroker(t), nil) })
	t.Run("librdkafka-mock", func(t *testing.T) {
		brokers := startRdkafkaMock(t, "flashsale.orders:4", "flashsale.orders.dlq:4")
		// The mock (librdkafka 2.0) answers ApiVersions v3+ and ListOffsets
		// v4+ in forms franz-go cannot read: Kafka 2.0's versions it can.
		clusterThroughKafka(t, brokers, []string{"-kafka-max-version", "2.0.0"})
	})
}

func clusterThroughKafka(t *testing.T, kafka string, kafkaFlags []string) {
	redisPort := freePort(t)
	redisAddr := fmt.Sprintf("127.0.0.1:%d", redisPort)
	ownRedis(t, redisPort)
	common, dsn := clusterArgsOn(t, redisAddr, kafka)
	common = append(append(common, kafkaFlags...), "-node-ttl", "1s", "-reconcile-interval", "200ms", "-kafka-session-timeout", "6s", "-max-lease", "8")
	if kafkaFlags != nil { // an independent client writes poison into the orders topic
		kcat(t, []byte("not an order\n"), "-b", kafka, "-P", "-t", "flashsale.orders", "-k", "poison")
	}
	writer := startWriter(t, common)
	var nodes []*proc
	for id := 1; id <= 2; id++ {
		nodes = append(nodes, start(t, t.TempDir(), append(common, "-node-id", strconv.Itoa(id))...))
	}
	const stock, users = 300, 3000
	if code, _, b := call(t, "PUT", nodes[0].Admin+"/api/v1/items/it", fmt.Sprintf(`{"name":"x","price_cents":700,"stock":%d,"per_user_limit":1}`, stock)); code != 201 {
		t.Fatalf("put item: %d %s", code, b)
	}
	time.Sleep(1200 * time.Millisecond) // node 2 learns the item from the catalogue

	var mu sync.Mutex
	won := map[string]orderJSON{} // by order id
	buy := func(n *proc, user string) {
		code, b := callOrDown(n.Public+"/api/v1/items/it/purchase", fmt.Sprintf(`{"user_id":%q,"request_id":"r"}`, user))
		switch code {
		case 201:
			var o orderJSON
			if err := json.Unmarshal(b, &o); err != nil {
				t.Errorf("201 body %s: %v", b, err)
				return
			}
			mu.Lock()
			won[o.OrderID] = o
			mu.Unlock()
		case 409, 503, 0: // sold out or over the limit; a dependency down; a killed node
		default:
			t.Errorf("purchase: %d %s", code, b)
		}
	}
	work := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for u := range work {
				buy(nodes[u%2], fmt.Sprint("u", u))
			}
		})
	}
	for u := range users {
		work <- u
		switch u { // every early user wins: the kills land mid-sale
		case stock / 3:
			writer.Stop() // SIGKILL, mid-batch or between batches: either way
			writer = startWriter(t, common)
		case stock * 2 / 3:
			nodes[1].Stop() // SIGKILL, with purchases in flight
		}
	}
	close(work)
	wg.Wait()
	// The dead node's leases go back after its registration expires and
	// its pending claims are abandoned once the writers pass the deadline;
	// the survivor then sells everything left. Orders the dead node had
	// acknowledged without its 201 reaching the client are sold too: the
	// ledger, not the client, says what was sold.
	balanced := func() ledger.Audit {
		a := audit(t, redisAddr, "it")
		if !a.Balanced() {
			t.Fatalf("ledger: %+v", a)
		}
		return a
	}
	deadline := time.Now().Add(30 * time.Second)
	for u := 0; ; u++ {
		if a := balanced(); a.Claimed == stock && a.Pending == 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("30 s after the node died the ledger still has %+v: stranded stock (%d answered 201)", a, len(won))
		}
		buy(nodes[0], fmt.Sprint("late", u))
		if u%20 == 19 {
			time.Sleep(100 * time.Millisecond)
		}
	}

	db, err := mysqlstore.Open(context.Background(), mysqlstore.Options{DSN: dsn, Tables: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if n, _ := db.Count(context.Background()); n == stock {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("%d rows in MySQL for %d units sold", n, stock)
		}
	}
	rows, err := db.All(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	users1 := map[string]bool{}
	for _, r := range rows {
		if users1[r.UserID] {
			t.Fatalf("user %s has two rows", r.UserID)
		}
		users1[r.UserID] = true
		if o, ok := won[strconv.FormatUint(r.ID, 10)]; ok && (o.UserID != r.UserID || o.Quantity != r.Quantity ||
			o.PriceCents != r.PriceCents || o.CreatedAt != r.CreatedAt.Format("2006-01-02T15:04:05.000Z")) {
			t.Fatalf("row %+v differs from its 201 %+v", r, o)
		}
	}
	stored := map[string]bool{}
	for _, r := range rows {
		stored[strconv.FormatUint(r.ID, 10)] = true
	}
	for id, o := range won {
		if !stored[id] {
			t.Fatalf("order %+v was answered 201 and is not in MySQL", o)
		}
	}
	t.Logf("%d rows; %d answered 201, %d acknowledged by the killed node without the answer reaching the client",
		len(rows), len(won), len(rows)-len(won))
	// Reads on the surviving node: persisted, the same order.
	for id, o := range won {
		code, _, b := call(t, "GET", nodes[0].Public+"/api/v1/orders/"+id, "")
		var got orderJSON
		json.Unmarshal(b, &got)
		if code != 200 || got.Status != "persisted" || got.UserID != o.UserID || got.CreatedAt != o.CreatedAt {
			t.Fatalf("GET order %s: %d %s, its 201 was %+v", id, code, b, o)
		}
		break // one is enough here; the rows were compared above
	}
	if a := balanced(); a.Claimed != stock || a.Pending != 0 || a.Remaining != 0 {
		t.Fatalf("ledger at the end: %+v", a)
	}
	if kafkaFlags == nil { // the dev broker's run: lint the live scrapes of an edge and a writer
		checkMetrics(t, nodes[0].Admin)
		checkMetrics(t, writer.Admin)
		return
	}
	// kcat's view: every row is a record of the orders topic, keyed by its
	// user, with its order id in a header; the poison is a dead letter.
	records := string(kcat(t, nil, "-b", kafka, "-C", "-t", "flashsale.orders", "-o", "beginning", "-e", "-q", "-f", "%k|%h\n"))
	for _, r := range rows {
		if !strings.Contains(records, r.UserID+"|order_id="+strconv.FormatUint(r.ID, 10)) {
			t.Fatalf("row %+v is not a record kcat reads in the orders topic", r)
		}
	}
	dead := string(kcat(t, nil, "-b", kafka, "-C", "-t", "flashsale.orders.dlq", "-o", "beginning", "-e", "-q", "-f", "%k|%h\n"))
	if !strings.Contains(dead, "poison|") || !strings.Contains(dead, "reason=undecodable") {
		t.Fatalf("the poison is not a dead letter with its reason; kcat reads the dead letters as:\n%s", dead)
	}
}
