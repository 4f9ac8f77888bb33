package dispatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"

	"citywatch/internal/kafkaio"
)

// The restart reads topics back partition by partition, without a
// consumer group, from an offset found by time up to the end offset seen
// when it opened. This is the reader of rules/restore.go, kept apart so
// that neither package reaches into the other.

// partitions lists the partition ids of topic.
func partitions(ctx context.Context, kc kafkaio.Config, topic string) ([]int, error) {
	meta, err := kc.Client().Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("cannot read metadata of %s: %w", topic, err)
	}
	var out []int
	for _, t := range meta.Topics {
		if t.Error != nil {
			return nil, fmt.Errorf("cannot read metadata of %s: %w", topic, t.Error)
		}
		for _, p := range t.Partitions {
			out = append(out, p.ID)
		}
	}
	slices.Sort(out)
	return out, nil
}

// partitionReader reads one partition over a connection to its leader.
type partitionReader struct {
	conn       *kafka.Conn
	partition  int
	first, end int64
	next       int64
	batch      *kafka.Batch
}

const (
	readTimeout   = 30 * time.Second
	maxFetchBytes = 16 << 20
)

func openPartition(ctx context.Context, brokers []string, topic string, p int) (*partitionReader, error) {
	var conn *kafka.Conn
	err := errors.New("no broker")
	for _, b := range brokers {
		if conn, err = kafka.DialLeader(ctx, "tcp", b, topic, p); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cannot reach the leader of %s/%d: %w", topic, p, err)
	}
	first, end, err := conn.ReadOffsets()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("cannot read offsets of %s/%d: %w", topic, p, err)
	}
	return &partitionReader{conn: conn, partition: p, first: first, end: end, next: first}, nil
}

func (pr *partitionReader) close() {
	if pr.batch != nil {
		pr.batch.Close()
		pr.batch = nil
	}
	pr.conn.Close()
}

// at returns the first message at or after offset off (< end).
func (pr *partitionReader) at(off int64) (kafka.Message, error) {
	if pr.batch != nil {
		pr.batch.Close()
		pr.batch = nil
	}
	if _, err := pr.conn.Seek(off, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
		return kafka.Message{}, err
	}
	if err := pr.conn.SetReadDeadline(time.Now().Add(readTimeout)); err != nil {
		return kafka.Message{}, err
	}
	return pr.conn.ReadMessage(maxFetchBytes)
}

// search returns the first offset in [first, end) whose message's time (by
// timeOf, Unix ms) is at or after t, or end when there is none. Times are
// taken as ascending along the partition, which holds up to the lateness
// of a clock; the windows read are generous enough to absorb it.
func (pr *partitionReader) search(t int64, timeOf func(*kafka.Message) (int64, bool)) (int64, error) {
	lo, hi := pr.first, pr.end
	for lo < hi {
		mid := lo + (hi-lo)/2
		m, err := pr.at(mid)
		if err != nil {
			return 0, err
		}
		if mt, ok := timeOf(&m); ok && mt >= t {
			hi = mid
		} else {
			lo = max(mid, m.Offset) + 1
		}
	}
	return lo, nil
}

// read returns the next message before end; false when there is none.
func (pr *partitionReader) read() (kafka.Message, bool, error) {
	empty := 0
	for pr.next < pr.end {
		if pr.batch == nil {
			if _, err := pr.conn.Seek(pr.next, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
				return kafka.Message{}, false, err
			}
			if err := pr.conn.SetReadDeadline(time.Now().Add(readTimeout)); err != nil {
				return kafka.Message{}, false, err
			}
			pr.batch = pr.conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: maxFetchBytes, MaxWait: time.Second})
		}
		m, err := pr.batch.ReadMessage()
		if err != nil {
			cerr := pr.batch.Close()
			pr.batch = nil
			if !errors.Is(err, io.EOF) {
				return kafka.Message{}, false, err
			}
			if cerr != nil {
				return kafka.Message{}, false, cerr
			}
			if empty++; empty > 3 {
				return kafka.Message{}, false, fmt.Errorf("no message at offset %d of %d", pr.next, pr.end)
			}
			continue
		}
		empty = 0
		if m.Offset < pr.next {
			continue
		}
		pr.next = m.Offset + 1
		return m, true, nil
	}
	return kafka.Message{}, false, nil
}

// readSince calls f with every message of every partition of topic from
// the first whose time (by timeOf) is at or after since, up to the end
// offsets at the call, partition after partition; it returns those end
// offsets.
func readSince(ctx context.Context, kc kafkaio.Config, topic string, since time.Time, timeOf func(*kafka.Message) (int64, bool), f func(*kafka.Message)) (map[int]int64, error) {
	parts, err := partitions(ctx, kc, topic)
	if err != nil {
		return nil, err
	}
	ends := map[int]int64{}
	for _, p := range parts {
		pr, err := openPartition(ctx, kc.Brokers, topic, p)
		if err != nil {
			return nil, err
		}
		ends[p] = pr.end
		from, err := pr.search(since.UnixMilli(), timeOf)
		if err == nil {
			pr.next = from
			for {
				var m kafka.Message
				var ok bool
				if m, ok, err = pr.read(); err != nil || !ok {
					break
				}
				f(&m)
			}
		}
		pr.close()
		if err != nil {
			return nil, fmt.Errorf("cannot read back %s/%d: %w", topic, p, err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return ends, nil
}
