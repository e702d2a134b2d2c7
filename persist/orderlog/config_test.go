package orderlog

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// EnsureTopics creates what is missing, and only that: where topics exist
// and the client may not create any (ACLs, librdkafka's mock), it passes;
// where they are missing and cannot be created, it says why. Progress reads
// the group's commits by naming the topic's partitions.
func TestEnsureTopicsAndProgress(t *testing.T) {
	kf, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer kf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := Config{Brokers: kf.ListenAddrs(), Partitions: 3}
	var refusing atomic.Bool // CreateTopics answered "not authorized", as under ACLs
	kf.ControlKey(int16(kmsg.CreateTopics), func(r kmsg.Request) (kmsg.Response, error, bool) {
		kf.KeepControl()
		if !refusing.Load() {
			return nil, nil, false
		}
		req := r.(*kmsg.CreateTopicsRequest)
		resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewCreateTopicsResponseTopic()
			st.Topic, st.ErrorCode = rt.Topic, kerr.TopicAuthorizationFailed.Code
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	refusing.Store(true)
	if err := EnsureTopics(ctx, c); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("missing topics that cannot be created: %v", err)
	}
	refusing.Store(false)
	if err := EnsureTopics(ctx, c); err != nil {
		t.Fatalf("creating the topics: %v", err)
	}
	refusing.Store(true)
	if err := EnsureTopics(ctx, c); err != nil {
		t.Fatalf("topics there, creation refused: %v", err)
	}

	p, err := NewProgress(c)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got, err := p.Committed(ctx); err != nil || len(got) != 0 {
		t.Fatalf("a group with no commit: %v %v", got, err)
	}
	if end, err := p.EndOffsets(ctx); err != nil || len(end) != 3 {
		t.Fatalf("end offsets: %v %v", end, err)
	}
}

// The lag as the brokers see it: records not committed by the group, and
// the age of the oldest; none once the group commits; right with no writer
// running at all.
func TestLagFromTheBrokers(t *testing.T) {
	kf, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer kf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := Config{Brokers: kf.ListenAddrs(), Partitions: 2}.WithDefaults()
	if err := EnsureTopics(ctx, c); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(c.ClientOpts(), kgo.DefaultProduceTopic(c.Topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	old := time.Now().Add(-3 * time.Second)
	for i := range 3 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Partition: 0, Value: []byte{byte(i)}, Timestamp: old.Add(time.Duration(i) * time.Second)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	l, err := NewLagCollector(c)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	lag, ages, err := l.Lag(ctx)
	if err != nil || lag[0] != 3 || lag[1] != 0 || ages[0] < 2*time.Second || ages[1] != 0 {
		t.Fatalf("before any commit: lag %v ages %v %v", lag, ages, err)
	}
	// The group commits the first two: one record left, a second younger.
	adm := kadm.NewClient(cl)
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: c.Topic, Partition: 0, At: 2, LeaderEpoch: -1})
	if _, err := adm.CommitOffsets(ctx, c.Group, offs); err != nil {
		t.Fatal(err)
	}
	lag, ages, err = l.Lag(ctx)
	if err != nil || lag[0] != 1 || ages[0] > 2*time.Second || ages[0] < time.Second {
		t.Fatalf("after a commit: lag %v ages %v %v", lag, ages, err)
	}
}
