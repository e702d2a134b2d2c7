package orderlog

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
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
