package kafkaio

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// LagMonitor measures consumer lag per partition as the end offset minus
// the group's committed offset, read from the brokers. kafka-go's own
// Reader lag is not used: for a group reader it always reads 0.
type LagMonitor struct {
	kc       Config
	metrics  *Metrics
	log      *slog.Logger
	interval time.Duration
	groups   map[string][]string // group → full topic names
}

// NewLagMonitor returns a monitor of groups (group → full topic names) that
// measures every interval.
func NewLagMonitor(kc Config, groups map[string][]string, interval time.Duration, m *Metrics, log *slog.Logger) *LagMonitor {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	return &LagMonitor{kc: kc, metrics: m, log: log, interval: interval, groups: groups}
}

// Run measures until ctx is done.
func (l *LagMonitor) Run(ctx context.Context) error {
	client := l.kc.Client()
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		for group, topics := range l.groups {
			if err := l.measure(ctx, client, group, topics); err != nil && ctx.Err() == nil {
				l.log.Debug("cannot measure consumer lag", "group", group, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Lag returns the lag of group on topics, by topic and partition.
func Lag(ctx context.Context, client *kafka.Client, group string, topics []string) (map[string]map[int]int64, error) {
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("cannot read metadata: %w", err)
	}
	parts := map[string][]int{}
	ends := map[string][]kafka.OffsetRequest{}
	for _, t := range meta.Topics {
		if t.Error != nil {
			continue
		}
		for _, p := range t.Partitions {
			parts[t.Name] = append(parts[t.Name], p.ID)
			ends[t.Name] = append(ends[t.Name], kafka.LastOffsetOf(p.ID))
		}
	}
	if len(parts) == 0 {
		return nil, nil
	}
	committed, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: parts})
	if err != nil {
		return nil, fmt.Errorf("cannot fetch committed offsets: %w", err)
	}
	end, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: ends})
	if err != nil {
		return nil, fmt.Errorf("cannot list end offsets: %w", err)
	}
	out := map[string]map[int]int64{}
	for topic, ps := range end.Topics {
		com := map[int]int64{}
		for _, p := range committed.Topics[topic] {
			com[p.Partition] = p.CommittedOffset
		}
		for _, p := range ps {
			if p.Error != nil {
				continue
			}
			c, ok := com[p.Partition]
			if !ok || c < 0 {
				c = p.FirstOffset // nothing committed yet: all that is there is lag
				if c < 0 {
					c = 0
				}
			}
			if out[topic] == nil {
				out[topic] = map[int]int64{}
			}
			out[topic][p.Partition] = max(p.LastOffset-c, 0)
		}
	}
	return out, nil
}

func (l *LagMonitor) measure(ctx context.Context, client *kafka.Client, group string, topics []string) error {
	lag, err := Lag(ctx, client, group, topics)
	if err != nil {
		return err
	}
	for topic, ps := range lag {
		for p, n := range ps {
			l.metrics.lag.WithLabelValues(group, topic, strconv.Itoa(p)).Set(float64(n))
		}
	}
	return nil
}
