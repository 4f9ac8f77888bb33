package kafkaio

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
// it chooses (Next), up to the end offset it saw when it opened (End),
// and a process that reads a whole topic live (a scaled-out rules
// process, a dispatcher) follows it on past End (Follow). It is how the stateful roles rebuild their state from their
// own output and their input. The offsets are listed through kafka-go
// (conn); the records are fetched and parsed by a fetcher over the same
// socket (fetch.go, which says who owns the messages' bytes).
type PartitionReader struct {
	conn      *kafka.Conn
	f         fetcher
	Partition int
	// First and End are the partition's first offset and the offset after
	// its last message when the reader opened; Next is the next offset
	// Read returns, First at the start.
	First, End, Next int64
	i                int   // f.msgs[i] is the next message fetched and not yet returned
	at               int64 // Next as Read or Follow left it; another: a caller moved it, or At fetched
	fetchedAt        int64 // Next when Read last fetched
}

// readTimeout bounds one fetch of a PartitionReader, beyond its wait.
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

// dialLeader connects to the leader of partition p of topic. It returns
// kafka-go's connection and the socket under it, secured and logged in,
// for a fetcher: the two take turns on it, each reading its whole answer
// before the other asks, so neither reads the other's.
func dialLeader(ctx context.Context, d *kafka.Dialer, brokers []string, topic string, p int) (*kafka.Conn, net.Conn, error) {
	err := errors.New("no broker")
	var part kafka.Partition
	for _, b := range brokers {
		if part, err = d.LookupPartition(ctx, "tcp", b, topic, p); err == nil {
			break
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach the leader of %s/%d: %w", topic, p, err)
	}
	// TLS here rather than in kafka-go, so that the socket it gives the
	// Conn is the secured one; kafka-go still logs in (SASL).
	ld := *d
	tc, dial := d.TLS, d.DialFunc
	if dial == nil {
		dial = (&net.Dialer{}).DialContext // kafka-go's own, less the deprecated DualStack (always on)
	}
	var sock net.Conn
	ld.TLS = nil
	ld.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil || tc == nil {
			sock = c
			return c, err
		}
		cfg := tc
		if cfg.ServerName == "" {
			// As kafka-go does: the host dialled.
			cfg = tc.Clone()
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		t := tls.Client(c, cfg)
		if err := t.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		sock = t
		return t, nil
	}
	conn, err := ld.DialPartition(ctx, "tcp", "", part)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach the leader of %s/%d: %w", topic, p, err)
	}
	return conn, sock, nil
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
	// One dialer for both: building it reads the TLS files.
	d := kc.Dialer()
	conn, sock, err := dialLeader(ctx, d, kc.Brokers, topic, p)
	if err != nil {
		return nil, err
	}
	first, end, err := conn.ReadOffsets()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("cannot read offsets of %s/%d: %w", topic, p, err)
	}
	clientID := d.ClientID
	if clientID == "" {
		clientID = kafka.DefaultClientID
	}
	return &PartitionReader{conn: conn, f: fetcher{conn: sock, topic: topic, partition: p, clientID: clientID},
		Partition: p, First: first, End: end, Next: first, at: first, fetchedAt: -1}, nil
}

// Close closes the connection.
func (pr *PartitionReader) Close() {
	pr.conn.Close()
}

// At returns the first message at or after offset off (< End). It leaves
// Next as it was; what Read had fetched is gone.
func (pr *PartitionReader) At(off int64) (kafka.Message, error) {
	next := pr.Next
	defer func() { pr.Next, pr.at = next, -1 }()
	pr.Next = off
	for empty := 0; pr.Next < pr.End; {
		if err := pr.f.fetch(pr.Next, atFetchBytes, time.Second); err != nil {
			return kafka.Message{}, fmt.Errorf("cannot read %s/%d at offset %d: %w", pr.f.topic, pr.Partition, pr.Next, err)
		}
		pr.f.msgs, pr.i = pr.f.msgs[:0], 0
		m, err := pr.next()
		if err != nil {
			return kafka.Message{}, err
		}
		if m != nil {
			return *m, nil
		}
		if pr.f.batches.after > pr.Next {
			pr.skip() // past a transaction's markers or a compacted stretch
			continue
		}
		if empty++; empty > 3 {
			break
		}
	}
	return kafka.Message{}, fmt.Errorf("no message at or after offset %d of %s/%d, which ends at %d", pr.Next, pr.f.topic, pr.Partition, pr.End)
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
// What it returns may be kept (fetch.go).
func (pr *PartitionReader) Read() (kafka.Message, bool, error) {
	pr.resync()
	empty := 0
	for pr.Next < pr.End {
		m, err := pr.next()
		if err != nil {
			return kafka.Message{}, false, err
		}
		if m != nil {
			if m.Offset >= pr.End {
				return kafka.Message{}, false, nil
			}
			return pr.take(m), true, nil
		}
		// The last response is read: the next, unless it brought nothing.
		if pr.fetchedAt == pr.Next && pr.f.batches.after <= pr.Next {
			if empty++; empty > 3 {
				return kafka.Message{}, false, fmt.Errorf("no message at offset %d of %s/%d, which ends at %d", pr.Next, pr.f.topic, pr.Partition, pr.End)
			}
		} else {
			empty = 0
		}
		pr.skip()
		if pr.Next >= pr.End {
			break
		}
		pr.fetchedAt = pr.Next
		if err := pr.f.fetch(pr.Next, maxFetchBytes, time.Second); err != nil {
			return kafka.Message{}, false, fmt.Errorf("cannot read %s/%d at offset %d: %w", pr.f.topic, pr.Partition, pr.Next, err)
		}
	}
	return kafka.Message{}, false, nil
}

// Follow returns the next message from Next on, End or not, waiting up to
// wait for one to be written; false when none came in time. Its messages
// carry the partition's high watermark at their fetch. After an error
// the connection may be out of step: open the partition again at Next.
// Close, from another goroutine, ends a wait at once (with an error).
func (pr *PartitionReader) Follow(wait time.Duration) (kafka.Message, bool, error) {
	pr.resync()
	for fetched := false; ; fetched = true {
		m, err := pr.next()
		if err != nil {
			return kafka.Message{}, false, err
		}
		if m != nil {
			return pr.take(m), true, nil
		}
		pr.skip()
		if fetched {
			return kafka.Message{}, false, nil
		}
		if err := pr.f.fetch(pr.Next, maxFetchBytes, wait); err != nil {
			return kafka.Message{}, false, fmt.Errorf("cannot read %s/%d at offset %d: %w", pr.f.topic, pr.Partition, pr.Next, err)
		}
	}
}

// Follow reads partition p of topic (a full name) from offset from on,
// calling f with each message, until ctx ends. f may keep what a
// message holds (fetch.go), not the message itself. A broker error (a leader moving, a connection lost)
// waits, up to 5 s, and opens the partition again where it stopped, as
// the group consumers retry, rather than give up. Records already gone
// from the log (retention passed them while the reader lagged) are
// skipped with a warning, as a consumer group's reader does.
func Follow(ctx context.Context, kc Config, topic string, p int, from int64, log *slog.Logger, f func(*kafka.Message)) {
	backoff := 100 * time.Millisecond
	next := from
	wait := kc.MaxWait
	if wait <= 0 {
		wait = 100 * time.Millisecond
	}
	retry := func(err error) bool {
		log.Warn("cannot read; retrying", "topic", topic, "partition", p, "offset", next, "retry_in", backoff, "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return false
		}
		backoff = min(2*backoff, 5*time.Second)
		return true
	}
	for ctx.Err() == nil {
		pr, err := OpenPartition(ctx, kc, topic, p)
		if err != nil {
			if ctx.Err() != nil || !retry(err) {
				return
			}
			continue
		}
		if next < 0 {
			next = pr.First // kafka.FirstOffset: a group with no position yet
		} else if next < pr.First {
			log.Warn("records gone from the log before they were read; reading on from the oldest left", "topic", topic, "partition", p, "from", next, "to", pr.First)
			next = pr.First
		}
		pr.Next = next
		// A fetch waiting for input ends at once when ctx does.
		stop := context.AfterFunc(ctx, pr.Close)
		var m kafka.Message // one for every call of f, which does not keep it
		for err == nil && ctx.Err() == nil {
			var ok bool
			if m, ok, err = pr.Follow(wait); err == nil && ok {
				backoff = 100 * time.Millisecond
				f(&m)
			}
		}
		next = pr.Next
		if stop() {
			pr.Close()
		}
		if ctx.Err() != nil || !retry(err) {
			return
		}
	}
}

// resync forgets what was fetched when Next is not where the reader left
// it: the caller moved it, or At fetched.
func (pr *PartitionReader) resync() {
	if pr.at != pr.Next {
		pr.f.drop()
		pr.i = 0
	}
}

// next returns the next message fetched and not yet returned at or after
// Next, reading the last response's batches as it needs; nil when they
// are used up.
func (pr *PartitionReader) next() (*kafka.Message, error) {
	for {
		// One before Next: a batch starts before where the fetch asked.
		for ; pr.i < len(pr.f.msgs); pr.i++ {
			if m := &pr.f.msgs[pr.i]; m.Offset >= pr.Next {
				return m, nil
			}
		}
		ok, err := pr.f.batch()
		if err != nil {
			return nil, fmt.Errorf("cannot read %s/%d at offset %d: %w", pr.f.topic, pr.Partition, pr.Next, err)
		}
		pr.i = 0
		if !ok {
			return nil, nil
		}
	}
}

// take returns m, which next returned, and moves past it.
func (pr *PartitionReader) take(m *kafka.Message) kafka.Message {
	pr.i++
	pr.Next = m.Offset + 1
	pr.at = pr.Next
	m.HighWaterMark = pr.f.highWater
	return *m
}

// skip moves Next past the last response's batches, once they are read:
// past a transaction's markers or a compacted stretch, if it held one.
func (pr *PartitionReader) skip() {
	pr.Next = max(pr.Next, pr.f.batches.after)
	pr.at = pr.Next
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
