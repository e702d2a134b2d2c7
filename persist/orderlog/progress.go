package orderlog

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Progress reads, from the brokers, where the orders topic ends and how far
// the writers' group has committed: what the claim reconciler's checkpoints
// and the consumer lag are made of.
type Progress struct {
	cl    *kgo.Client
	adm   *kadm.Client
	topic string
	group string
}

// NewProgress connects to the brokers of c; it does not wait for them.
func NewProgress(c Config) (*Progress, error) {
	c = c.WithDefaults()
	cl, err := kgo.NewClient(c.ClientOpts()...)
	if err != nil {
		return nil, fmt.Errorf("orderlog: %w", err)
	}
	return &Progress{cl: cl, adm: kadm.NewClient(cl), topic: c.Topic, group: c.Group}, nil
}

// Close closes the client.
func (p *Progress) Close() { p.cl.Close() }

// Topic is the orders topic.
func (p *Progress) Topic() string { return p.topic }

// EndOffsets are the orders topic's end offsets, by partition.
func (p *Progress) EndOffsets(ctx context.Context) (map[int32]int64, error) {
	offs, err := p.adm.ListEndOffsets(ctx, p.topic)
	if err != nil {
		return nil, fmt.Errorf("orderlog: cannot list end offsets: %w", err)
	}
	if err := offs.Error(); err != nil {
		return nil, fmt.Errorf("orderlog: cannot list end offsets: %w", err)
	}
	end := map[int32]int64{}
	offs.Each(func(o kadm.ListedOffset) { end[o.Partition] = o.Offset })
	if len(end) == 0 {
		return nil, fmt.Errorf("orderlog: topic %s has no partitions", p.topic)
	}
	return end, nil
}

// Committed are the writers' committed offsets on the orders topic, by
// partition; a partition (or a group) with no commit is absent. It asks for
// the topic's partitions by name (OffsetFetch), which every broker answers
// alike, rather than for all of the group's topics.
func (p *Progress) Committed(ctx context.Context) (map[int32]int64, error) {
	topics, err := p.adm.ListTopics(ctx, p.topic)
	if err != nil {
		return nil, fmt.Errorf("orderlog: cannot read the topic's partitions: %w", err)
	}
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = p.group
	rt := kmsg.NewOffsetFetchRequestTopic()
	rt.Topic = p.topic
	rt.Partitions = topics[p.topic].Partitions.Numbers()
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, p.cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if errors.Is(err, kerr.GroupIDNotFound) {
		return map[int32]int64{}, nil // a group that does not exist yet has committed nothing
	}
	if err != nil {
		return nil, fmt.Errorf("orderlog: cannot fetch the writers' offsets: %w", err)
	}
	out := map[int32]int64{}
	for _, t := range resp.Topics {
		for _, part := range t.Partitions {
			if t.Topic == p.topic && part.ErrorCode == 0 && part.Offset >= 0 {
				out[part.Partition] = part.Offset
			}
		}
	}
	return out, nil
}

// Lag is, per partition, how many records the writers have not committed.
func (p *Progress) Lag(ctx context.Context) (map[int32]int64, error) {
	end, err := p.EndOffsets(ctx)
	if err != nil {
		return nil, err
	}
	committed, err := p.Committed(ctx)
	if err != nil {
		return nil, err
	}
	lag := map[int32]int64{}
	for part, e := range end {
		lag[part] = e - committed[part]
	}
	return lag, nil
}
