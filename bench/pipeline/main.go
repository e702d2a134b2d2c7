// Command pipeline measures cluster mode's order path behind the engine:
// claim in Redis -> produce to Kafka (acks=all) -> writers -> MariaDB, with
// the writers' batch size and ants pool size as the knobs.
//
//	go run ./bench/pipeline -orders 20000 -batch 100,1000 -pool 2,8
//
// For each combination it claims and produces -orders orders from
// -producers goroutines (a flash sale's winners arriving at once), with
// -writers writers consuming, and reports the produce latency, the
// end-to-end orders per second (first produce to last row in MySQL), the
// largest consumer lag and how long the lag took to drain after the last
// acknowledgement. With -preload the writers start after the last ack,
// and orders/s is theirs alone. Each writer is built as the binary builds
// one (node.NewWriter), so -batch and -pool are each writer's -writer-batch
// and -writer-pool. Kafka is kfake in process unless -kafka names brokers;
// Redis and MariaDB are the real ones (-redis, -mysql; a throwaway
// database is created and dropped for each run).
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/internal/mysqltest"
	"github.com/flashsale/flashsale/node"
	"github.com/flashsale/flashsale/persist/kafkasink"
	"github.com/flashsale/flashsale/persist/mysqlstore"
	"github.com/flashsale/flashsale/persist/orderlog"
	"github.com/flashsale/flashsale/persist/redisledger"
)

func main() {
	orders := flag.Int("orders", 20000, "orders per run")
	producers := flag.Int("producers", 256, "concurrent producing goroutines (winners in flight)")
	writers := flag.Int("writers", 2, "writers in the consumer group")
	batches := flag.String("batch", "100,500,2000", "writer batch sizes to try (records per poll), comma separated")
	pools := flag.String("pool", "1,4,8", "ants pool sizes (each writer's -writer-pool) to try, comma separated")
	partitions := flag.Int("partitions", 12, "partitions of the orders topic")
	linger := flag.Duration("linger", 0, "producer linger")
	batchBytes := flag.Int("batch-bytes", 1<<20, "producer: largest batch per partition, bytes")
	preload := flag.Bool("preload", false, "produce every order first, then start the writers: orders/s is the writers' alone (a backlog draining)")
	kafka := flag.String("kafka", "", "Kafka brokers; empty runs kfake in process")
	redisAddr := flag.String("redis", "127.0.0.1:6379", "Redis")
	dsn := flag.String("mysql", mysqltest.DefaultDSN, "MySQL DSN of a user that may create flashsale_test_* databases")
	flag.Parse()

	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{*redisAddr}, DisableCache: true})
	check(err)
	defer rc.Close()

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "batch\tpool\torders/s\tproduce p50\tp99\tp99.9\tmax lag\tdrain after last ack\trows\t")
	for _, b := range ints(*batches) {
		for _, p := range ints(*pools) {
			r := run(rc, *redisAddr, *dsn, *kafka, *orders, *producers, *writers, b, p, int32(*partitions), *linger, int32(*batchBytes), *preload)
			fmt.Fprintf(tw, "%d\t%d\t%.0f\t%v\t%v\t%v\t%d\t%v\t%d\t\n", b, p, r.rate, r.p50, r.p99, r.p999, r.maxLag,
				r.drain.Round(time.Millisecond), r.rows)
			fmt.Fprintf(os.Stderr, "batch %d pool %d: %.0f orders/s\n", b, p, r.rate)
		}
	}
	tw.Flush()
}

type result struct {
	rate           float64
	p50, p99, p999 time.Duration
	maxLag         int64
	drain          time.Duration
	rows           int64
}

func run(rc rueidis.Client, redisAddr, baseDSN, brokers string, n, producers, writers, batch, pool int, partitions int32, linger time.Duration, batchBytes int32, preload bool) result {
	ctx := context.Background()
	// A fresh broker, topic, keys and database for each run; the writers
	// configured as the command would configure them.
	cfg := node.DefaultConfig()
	cfg.Role, cfg.AdminListen, cfg.RedisAddr = node.RoleWriter, "127.0.0.1:0", redisAddr
	if brokers == "" {
		kf, err := kfake.NewCluster(kfake.NumBrokers(1))
		check(err)
		defer kf.Close()
		cfg.Kafka.Brokers = kf.ListenAddrs()
	} else {
		cfg.Kafka.Brokers = strings.Split(brokers, ",")
	}
	cfg.Kafka.Topic = fmt.Sprintf("bench.%d", rand.Uint32())
	cfg.Kafka.Group = "bench-" + cfg.Kafka.Topic
	cfg.Kafka.Partitions, cfg.Kafka.Linger, cfg.Kafka.BatchBytes = partitions, linger, batchBytes
	cfg.Writer.MaxBatch, cfg.MySQL.Workers = batch, pool
	cfg.Redis.Prefix = fmt.Sprintf("bench-%d", rand.Uint32())
	check(orderlog.EnsureTopics(ctx, cfg.Kafka))
	dsn, drop, err := mysqltest.Create(baseDSN)
	check(err)
	defer drop()
	cfg.MySQL.DSN = dsn
	defer func() {
		keys, _ := rc.Do(ctx, rc.B().Keys().Pattern("{"+cfg.Redis.Prefix+":*").Build()).AsStrSlice()
		for _, k := range keys {
			rc.Do(ctx, rc.B().Del().Key(k).Build())
		}
	}()
	ledger := redisledger.New(rc, 1, redisledger.Options{Prefix: cfg.Redis.Prefix, TrackClaims: true, Timeout: 5 * time.Second})
	check(ledger.PutItem(ctx, "it", int64(n), false))
	_, _, err = ledger.Lease(ctx, "it", int64(n))
	check(err)

	var running []*node.Writer
	startWriters := func() {
		for range writers {
			w, err := node.NewWriter(ctx, cfg)
			check(err)
			adm, err := net.Listen("tcp", cfg.AdminListen)
			check(err)
			go w.Serve(adm)
			running = append(running, w)
		}
	}
	if !preload {
		startWriters()
	}
	defer func() {
		for _, w := range running {
			w.Stop()
		}
	}()
	db, err := mysqlstore.Open(ctx, mysqlstore.Options{DSN: dsn, Tables: cfg.MySQL.Tables})
	check(err)
	defer db.Close()
	progress, err := orderlog.NewProgress(cfg.Kafka)
	check(err)
	defer progress.Close()
	p, err := kafkasink.NewProducer(cfg.Kafka, kafkasink.Options{})
	check(err)
	defer p.Close(ctx)

	// Lag sampler: records produced and not yet committed by the writers.
	var maxLag atomic.Int64
	var lastAck atomic.Int64
	sampling, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go func() {
		for sampling.Err() == nil {
			if lag, err := progress.Lag(sampling); err == nil {
				var sum int64
				for _, l := range lag {
					sum += l
				}
				if sum > maxLag.Load() {
					maxLag.Store(sum)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	hist := hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 3)
	var mu sync.Mutex
	next := atomic.Int64{}
	start := time.Now()
	var pw sync.WaitGroup
	for range producers {
		pw.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				o := &engine.Order{ID: uint64(i), ItemID: "it", UserID: "u" + strconv.FormatInt(i, 10), Quantity: 1,
					PriceCents: 100, CreatedAt: time.Now().UTC().Truncate(time.Millisecond)}
				if _, err := ledger.Claim(ctx, o, 1); err != nil {
					check(err)
				}
				t := time.Now()
				if err := p.Append(ctx, o); err != nil {
					check(err)
				}
				d := time.Since(t)
				mu.Lock()
				hist.RecordValue(d.Microseconds())
				mu.Unlock()
				lastAck.Store(time.Now().UnixNano())
			}
		})
	}
	pw.Wait()
	if preload { // the writers alone: from their start to the last row
		start = time.Now()
		startWriters()
	}
	var rows int64
	for {
		rows, err = db.Count(ctx)
		check(err)
		if rows >= int64(n) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	end := time.Now()
	// Drained: the writers' committed offsets reached the end.
	for {
		lag, err := progress.Lag(ctx)
		check(err)
		var sum int64
		for _, l := range lag {
			sum += l
		}
		if sum == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	drained := time.Now()
	us := func(q float64) time.Duration { return time.Duration(hist.ValueAtQuantile(q)) * time.Microsecond }
	return result{rate: float64(n) / end.Sub(start).Seconds(), p50: us(50), p99: us(99), p999: us(99.9),
		maxLag: maxLag.Load(), drain: drained.Sub(time.Unix(0, lastAck.Load())), rows: rows}
}

func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		check(err)
		out = append(out, n)
	}
	return out
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "pipeline:", err)
		os.Exit(1)
	}
}
