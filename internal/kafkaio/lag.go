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
	pos, err := Positions(ctx, client, group, topics)
	if err != nil || pos == nil {
		return nil, err
	}
	out := make(map[string]map[int]int64, len(pos))
	for topic, ps := range pos {
		out[topic] = make(map[int]int64, len(ps))
		for p, x := range ps {
			out[topic][p] = x.Lag()
		}
	}
	return out, nil
}

// TotalLag returns the lag of group summed over every partition of
// topics.
func TotalLag(ctx context.Context, client *kafka.Client, group string, topics []string) (int64, error) {
	pos, err := Positions(ctx, client, group, topics)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, ps := range pos {
		for _, x := range ps {
			n += x.Lag()
		}
	}
	return n, nil
}

// Position is where a consumer group stands on one partition.
type Position struct {
	// Committed is the group's committed offset: the next message it will
	// read. With nothing committed it is the partition's first offset.
	Committed int64
	// End is the offset the next message written will have.
	End int64
}

// Lag returns the messages between the committed offset and the end.
func (p Position) Lag() int64 { return max(p.End-p.Committed, 0) }

// Positions returns where group stands on topics, by topic and partition,
// read from the brokers. Partitions whose offsets the brokers did not
// answer are left out.
func Positions(ctx context.Context, client *kafka.Client, group string, topics []string) (map[string]map[int]Position, error) {
	parts, err := partitionsOf(ctx, client, topics)
	if err != nil || len(parts) == 0 {
		return nil, err
	}
	// Committed before the ends: an end read after a commit is not below it.
	committed, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: parts})
	if err != nil {
		return nil, fmt.Errorf("cannot fetch committed offsets: %w", err)
	}
	end, err := listOffsets(ctx, client, parts, kafka.LastOffset)
	if err != nil {
		return nil, err
	}
	out := map[string]map[int]Position{}
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
				c = max(p.FirstOffset, 0) // nothing committed yet: all that is there is lag
			}
			if out[topic] == nil {
				out[topic] = map[int]Position{}
			}
			out[topic][p.Partition] = Position{Committed: c, End: p.LastOffset}
		}
	}
	return out, nil
}

// EndOffsets returns the end offset of each partition of topic, the
// offset the next message written will have, read from the brokers.
// Partitions whose offsets the brokers did not answer are left out.
func EndOffsets(ctx context.Context, client *kafka.Client, topic string) (map[int]int64, error) {
	b, err := Bounds(ctx, client, topic, false)
	if err != nil {
		return nil, err
	}
	out := make(map[int]int64, len(b))
	for p, x := range b {
		out[p] = x.End
	}
	return out, nil
}

// Span is the offsets a partition holds: from First up to, not
// including, End; empty when they are equal.
type Span struct {
	First, End int64
}

// Bounds returns the end offset of each partition of topic and, with
// first, its first offset, in one ListOffsets request each (First is -1
// without). Partitions whose offsets the brokers did not answer are left
// out.
func Bounds(ctx context.Context, client *kafka.Client, topic string, first bool) (map[int]Span, error) {
	parts, err := partitionsOf(ctx, client, []string{topic})
	if err != nil || len(parts) == 0 {
		return nil, err
	}
	end, err := listOffsets(ctx, client, parts, kafka.LastOffset)
	if err != nil {
		return nil, err
	}
	out := map[int]Span{}
	for _, p := range end.Topics[topic] {
		if p.Error == nil {
			out[p.Partition] = Span{First: -1, End: p.LastOffset}
		}
	}
	if !first {
		return out, nil
	}
	// A request of its own: a broker refuses a partition named twice in
	// one.
	start, err := listOffsets(ctx, client, parts, kafka.FirstOffset)
	if err != nil {
		return nil, err
	}
	for _, p := range start.Topics[topic] {
		if x, ok := out[p.Partition]; ok && p.Error == nil {
			x.First = p.FirstOffset
			out[p.Partition] = x
		} else {
			delete(out, p.Partition)
		}
	}
	return out, nil
}

// partitionsOf reads the partitions of topics from the metadata; a topic
// the brokers answer with an error is left out.
func partitionsOf(ctx context.Context, client *kafka.Client, topics []string) (map[string][]int, error) {
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("cannot read metadata: %w", err)
	}
	parts := map[string][]int{}
	for _, t := range meta.Topics {
		if t.Error != nil {
			continue
		}
		for _, p := range t.Partitions {
			parts[t.Name] = append(parts[t.Name], p.ID)
		}
	}
	return parts, nil
}

// listOffsets reads the end offsets (which kafka.LastOffset) or the first
// offsets (kafka.FirstOffset) of parts (topic → partitions).
func listOffsets(ctx context.Context, client *kafka.Client, parts map[string][]int, which int64) (*kafka.ListOffsetsResponse, error) {
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for topic, ps := range parts {
		for _, p := range ps {
			req.Topics[topic] = append(req.Topics[topic], kafka.OffsetRequest{Partition: p, Timestamp: which})
		}
	}
	res, err := client.ListOffsets(ctx, req)
	if err != nil {
		if which == kafka.FirstOffset {
			return nil, fmt.Errorf("cannot list first offsets: %w", err)
		}
		return nil, fmt.Errorf("cannot list end offsets: %w", err)
	}
	return res, nil
}

// RecordTime returns the timestamp of the record at offset of a
// partition: its producer's create time, or the broker's append time on a
// topic so configured. It reads one record batch.
func RecordTime(ctx context.Context, client *kafka.Client, topic string, partition int, offset int64) (time.Time, error) {
	res, err := client.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: partition, Offset: offset,
		MinBytes: 1, MaxBytes: 1, MaxWait: 100 * time.Millisecond})
	if err == nil {
		err = res.Error
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("cannot fetch %s/%d at %d: %w", topic, partition, offset, err)
	}
	for {
		r, err := res.Records.ReadRecord()
		if err != nil {
			return time.Time{}, fmt.Errorf("cannot read %s/%d at %d: %w", topic, partition, offset, err)
		}
		if r.Offset >= offset {
			return r.Time, nil
		}
	}
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
