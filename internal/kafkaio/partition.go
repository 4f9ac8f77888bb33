package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"
)

// Partitions lists the partition ids of topic (a full name), sorted.
func Partitions(ctx context.Context, kc Config, topic string) ([]int, error) {
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

// PartitionReader reads one partition over a connection to its leader,
// without a consumer group: a restart reads what is there, from an offset
// it chooses (Next), up to the end offset it saw when it opened (End). It
// is how the stateful roles rebuild their state from their own output and
// their input.
type PartitionReader struct {
	conn      *kafka.Conn
	Partition int
	// First and End are the partition's first offset and the offset after
	// its last message when the reader opened; Next is the next offset
	// Read returns, First at the start.
	First, End, Next int64
	batch            *kafka.Batch
}

// readTimeout bounds one fetch of a PartitionReader.
const readTimeout = 30 * time.Second

const maxFetchBytes = 16 << 20

// atFetchBytes bounds the fetch of At, which wants one message: a record
// batch larger than this still comes whole (a broker always returns the
// first batch). What a fetch brings beyond it is read and thrown away at
// each step of a Search: at maxFetchBytes that cost a restart's replay a
// fifth of its time, and at 1 MiB (some 200 MB over a million events in
// 12 partitions) a restart on a day of input still ran 15–20 % slower
// (BENCHMARKS.md). 64 KiB holds one of ingest's batches (256 events)
// uncompressed.
const atFetchBytes = 64 << 10

// dialLeader connects to the leader of partition p of topic.
func dialLeader(ctx context.Context, kc Config, topic string, p int) (*kafka.Conn, error) {
	err := errors.New("no broker")
	d := kc.Dialer()
	for _, b := range kc.Brokers {
		var conn *kafka.Conn
		if conn, err = d.DialLeader(ctx, "tcp", b, topic, p); err == nil {
			return conn, nil
		}
	}
	return nil, fmt.Errorf("cannot reach the leader of %s/%d: %w", topic, p, err)
}

// OffsetAt returns the offset of the first message of partition p of
// topic written at or after since, or the partition's end when there is
// none. The end is read before the lookup: a lookup that finds nothing
// answers -1, which a kafka-go reader (SetOffsetAt) takes as the end at
// its first fetch, so that a message written between the two is
// skipped.
func OffsetAt(ctx context.Context, kc Config, topic string, p int, since time.Time) (int64, error) {
	pr, err := OpenPartition(ctx, kc, topic, p)
	if err != nil {
		return 0, err
	}
	defer pr.Close()
	off, err := pr.OffsetAt(since)
	if err != nil {
		return 0, fmt.Errorf("cannot look up %s/%d: %w", topic, p, err)
	}
	return off, nil
}

// OpenPartition opens partition p of topic (a full name).
func OpenPartition(ctx context.Context, kc Config, topic string, p int) (*PartitionReader, error) {
	conn, err := dialLeader(ctx, kc, topic, p)
	if err != nil {
		return nil, err
	}
	first, end, err := conn.ReadOffsets()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("cannot read offsets of %s/%d: %w", topic, p, err)
	}
	return &PartitionReader{conn: conn, Partition: p, First: first, End: end, Next: first}, nil
}

// Close closes the connection.
func (pr *PartitionReader) Close() {
	if pr.batch != nil {
		pr.batch.Close()
		pr.batch = nil
	}
	pr.conn.Close()
}

// At returns the first message at or after offset off (< End).
func (pr *PartitionReader) At(off int64) (kafka.Message, error) {
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
	return pr.conn.ReadMessage(atFetchBytes)
}

// OffsetAt returns the offset of the first message whose record time is
// at or after t, by the broker's time index (one ListOffsets request),
// within [First, End]: End, read when the reader opened, when there is
// none.
func (pr *PartitionReader) OffsetAt(t time.Time) (int64, error) {
	if err := pr.conn.SetDeadline(time.Now().Add(readTimeout)); err != nil {
		return 0, err
	}
	off, err := pr.conn.ReadOffset(t)
	if err != nil {
		return 0, fmt.Errorf("cannot look up partition %d at %s: %w", pr.Partition, t.Format(time.RFC3339), err)
	}
	if off < 0 || off > pr.End {
		off = pr.End
	}
	return max(off, pr.First), nil
}

// Search returns the first offset in [lo, hi) whose message's time (by
// timeOf, Unix ms) is at or after t, or hi when there is none. Times are
// taken as ascending along the partition, which holds up to the lateness
// of a device's clock: a binary search, a few dozen reads.
func (pr *PartitionReader) Search(lo, hi, t int64, timeOf func(*kafka.Message) (int64, bool)) (int64, error) {
	for lo < hi {
		mid := lo + (hi-lo)/2
		m, err := pr.At(mid)
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

// Read returns the next message before End; false when there is none.
func (pr *PartitionReader) Read() (kafka.Message, bool, error) {
	empty := 0
	for pr.Next < pr.End {
		if pr.batch == nil {
			if _, err := pr.conn.Seek(pr.Next, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
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
				return kafka.Message{}, false, fmt.Errorf("no message at offset %d of %d", pr.Next, pr.End)
			}
			continue
		}
		empty = 0
		if m.Offset < pr.Next {
			continue
		}
		pr.Next = m.Offset + 1
		return m, true, nil
	}
	return kafka.Message{}, false, nil
}

// Each calls f with every message from Next to End.
func (pr *PartitionReader) Each(f func(*kafka.Message)) error {
	for {
		m, ok, err := pr.Read()
		if err != nil || !ok {
			return err
		}
		f(&m)
	}
}

// ReadSince calls f with every message of every partition of topic (a
// full name) from the first whose time (by timeOf, Unix ms) is at or after
// since, up to the end offsets at the call, partition after partition, and
// returns those end offsets, where a reader that follows the topic goes
// on.
func ReadSince(ctx context.Context, kc Config, topic string, since time.Time, timeOf func(*kafka.Message) (int64, bool), f func(*kafka.Message)) (map[int]int64, error) {
	parts, err := Partitions(ctx, kc, topic)
	if err != nil {
		return nil, err
	}
	ends := map[int]int64{}
	for _, p := range parts {
		pr, err := OpenPartition(ctx, kc, topic, p)
		if err != nil {
			return nil, err
		}
		ends[p] = pr.End
		from, err := pr.Search(pr.First, pr.End, since.UnixMilli(), timeOf)
		if err == nil {
			pr.Next = from
			err = pr.Each(f)
		}
		pr.Close()
		if err != nil {
			return nil, fmt.Errorf("cannot read back %s/%d: %w", topic, p, err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return ends, nil
}
