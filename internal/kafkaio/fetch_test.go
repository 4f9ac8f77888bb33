package kafkaio

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
	"github.com/segmentio/kafka-go/protocol"
)

// got is what a test compares of a message.
type got struct {
	Offset     int64
	Key, Value []byte
	Headers    []kafka.Header
	Time       time.Time
}

func gotOf(ms []kafka.Message) []got {
	out := make([]got, len(ms))
	for i, m := range ms {
		out[i] = got{m.Offset, m.Key, m.Value, m.Headers, m.Time}
	}
	return out
}

// TestPartitionReaderCodecs reads what writers of every compression wrote,
// with and without keys and headers, in several batches, from the start
// and from within a batch, and compares it with what kafka-go's own batch
// reader reads.
func TestPartitionReaderCodecs(t *testing.T) {
	base := testBroker(t)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	for _, codec := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		t.Run(codec, func(t *testing.T) {
			c := base
			c.Compression = codec
			c.BatchSize = 7 // several batches
			topic := c.Topic("codec-" + codec)
			if err := EnsureTopics(t.Context(), c, "codec-"+codec); err != nil {
				t.Fatal(err)
			}
			w := c.NewWriter()
			defer w.Close()
			w.Balancer = kafka.BalancerFunc(func(kafka.Message, ...int) int { return 1 })
			var msgs []kafka.Message
			for i := range 40 {
				m := kafka.Message{Topic: topic, Value: bytes.Repeat([]byte(strconv.Itoa(i)), i*3), Time: t0.Add(time.Duration(i) * time.Second)}
				if i%3 != 0 {
					m.Key = []byte("k" + strconv.Itoa(i))
				}
				for h := range i % 3 {
					m.Headers = append(m.Headers, kafka.Header{Key: "h" + strconv.Itoa(h), Value: []byte(strconv.Itoa(i))})
				}
				msgs = append(msgs, m)
			}
			for i := 0; i < len(msgs); i += 7 {
				if err := w.WriteMessages(t.Context(), msgs[i:min(i+7, len(msgs))]...); err != nil {
					t.Fatal(err)
				}
			}
			want := referenceRead(t, c, topic, 1)
			if len(want) != len(msgs) {
				t.Fatalf("kafka-go read %d messages, want %d", len(want), len(msgs))
			}
			for _, from := range []int64{0, 10, 39} {
				pr, err := OpenPartition(t.Context(), c, topic, 1)
				if err != nil {
					t.Fatal(err)
				}
				pr.Next = from
				var read []kafka.Message
				if err := pr.Each(func(m *kafka.Message) { read = append(read, *m) }); err != nil {
					t.Fatal(err)
				}
				m, err := pr.At(from + 1)
				pr.Close()
				if err != nil && from+1 < 40 {
					t.Errorf("at %d: %v", from+1, err)
				} else if err == nil && m.Offset != from+1 {
					t.Errorf("at %d: offset %d", from+1, m.Offset)
				}
				opts := []cmp.Option{cmpopts.EquateEmpty()}
				if diff := cmp.Diff(gotOf(want[from:]), gotOf(read), opts...); diff != "" {
					t.Errorf("from %d (-kafka-go +fetcher):\n%s", from, diff)
				}
			}
		})
	}
}

// referenceRead reads partition p of topic whole with kafka-go's batch
// reader.
func referenceRead(t *testing.T, c Config, topic string, p int) []kafka.Message {
	t.Helper()
	conn, err := c.Dialer().DialLeader(t.Context(), "tcp", c.Brokers[0], topic, p)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, end, err := conn.ReadOffsets()
	if err != nil {
		t.Fatal(err)
	}
	var out []kafka.Message
	for int64(len(out)) < end {
		if _, err := conn.Seek(int64(len(out)), kafka.SeekAbsolute); err != nil {
			t.Fatal(err)
		}
		b := conn.ReadBatch(1, maxFetchBytes)
		for {
			m, err := b.ReadMessage()
			if err != nil {
				break
			}
			if m.Offset >= int64(len(out)) {
				out = append(out, m)
			}
		}
		b.Close()
	}
	return out
}

// encodeBatch returns a record batch of recs from offset base, as kafka-go
// writes one, without the size in front.
func encodeBatch(t testing.TB, base int64, c compress.Compression, recs ...protocol.Record) []byte {
	t.Helper()
	rs := protocol.RecordSet{Version: 2, Attributes: protocol.Attributes(c), Records: protocol.NewRecordReader(recs...)}
	var b bytes.Buffer
	if _, err := rs.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	out := b.Bytes()[4:]
	binary.BigEndian.PutUint64(out, uint64(base))
	return out
}

func record(key, value string) protocol.Record {
	return protocol.Record{Time: time.UnixMilli(1_700_000_000_000), Key: protocol.NewBytes([]byte(key)), Value: protocol.NewBytes([]byte(value))}
}

// TestAppendRecordsBad checks what a fetch makes of batches it cannot read:
// an error naming the offset, never a panic; a batch cut short at the
// end is left for the next fetch; a control batch is passed over.
func TestAppendRecordsBad(t *testing.T) {
	good := encodeBatch(t, 100, compress.Lz4, record("a", "1"), record("b", "2"))
	resum := func(b []byte) []byte {
		binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
		return b
	}
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	control := edit(func(b []byte) []byte {
		binary.BigEndian.PutUint16(b[21:], binary.BigEndian.Uint16(b[21:])|batchControl)
		return resum(b)
	})
	for _, tc := range []struct {
		name  string
		in    []byte
		n     int
		after int64
		err   string
	}{
		{"good", good, 2, 102, ""},
		{"two", append(bytes.Clone(good), encodeBatch(t, 102, compress.None, record("c", "3"))...), 3, 103, ""},
		{"cut short", good[:len(good)-1], 0, 0, ""},
		{"a whole one then one cut short", append(bytes.Clone(good), good[:20]...), 2, 102, ""},
		{"control", control, 0, 102, ""},
		{"checksum", edit(func(b []byte) []byte { b[len(b)-1]++; return b }), 0, 102, "checksum mismatch"},
		{"magic", edit(func(b []byte) []byte { b[16] = 1; return b }), 0, 0, "record format 1"},
		{"length", edit(func(b []byte) []byte { binary.BigEndian.PutUint32(b[8:], 10); return b }), 0, 0, "length 10"},
		{"compression", edit(func(b []byte) []byte { b[22] |= 7; return resum(b) }), 0, 102, "unknown compression"},
		{"more records than there are", edit(func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[57:], 3)
			return resum(b)
		}), 0, 102, "record 2 runs past the batch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs, bs, err := appendRecords(nil, tc.in, "t", 0)
			after := bs.after
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !errors.Is(err, ErrMalformedBatch) || !bytes.Contains([]byte(err.Error()), []byte(tc.err))) {
				t.Fatalf("err %v, want %q", err, tc.err)
			}
			if tc.err == "" && (len(msgs) != tc.n || after != tc.after) {
				t.Errorf("%d messages, after %d; want %d, %d", len(msgs), after, tc.n, tc.after)
			}
		})
	}
}

// TestAppendRecordsShare checks who owns what: an uncompressed batch's
// messages point into the response, a compressed one's do not.
func TestAppendRecordsShare(t *testing.T) {
	for _, c := range []compress.Compression{compress.None, compress.Lz4} {
		in := encodeBatch(t, 0, c, record("k", "value"))
		msgs, bs, err := appendRecords(nil, in, "t", 0)
		held := bs.held
		if err != nil || len(msgs) != 1 {
			t.Fatalf("%v: %v, %d messages", c, err, len(msgs))
		}
		inside := &msgs[0].Value[0] == &in[len(in)-len("value")-1]
		if held != (c == compress.None) || inside != held {
			t.Errorf("%v: held %v, value inside the response %v", c, held, inside)
		}
	}
}

// FuzzAppendRecords: any bytes give messages or an error, never a panic,
// and never more memory than the bounds allow.
func FuzzAppendRecords(f *testing.F) {
	for _, c := range []compress.Compression{compress.None, compress.Gzip, compress.Snappy, compress.Lz4, compress.Zstd} {
		var recs []protocol.Record
		for i := range 3 {
			r := record(fmt.Sprint("k", i), fmt.Sprint("value ", i))
			r.Headers = []protocol.Header{{Key: "h", Value: []byte("v")}}
			recs = append(recs, r)
		}
		f.Add(encodeBatch(f, 7, c, recs...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// Checksums made right, so that the records are read: a broker
		// checks them before they reach a fetch.
		for rest := b; len(rest) >= batchHeaderSize; {
			size := int64(int32(binary.BigEndian.Uint32(rest[8:]))) + 12
			if size < batchHeaderSize || size > int64(len(rest)) {
				break
			}
			binary.BigEndian.PutUint32(rest[17:], crc32.Checksum(rest[21:size], castagnoli))
			rest = rest[size:]
		}
		msgs, bs, err := appendRecords(nil, b, "t", 0)
		if err != nil {
			return
		}
		after := bs.after
		for _, m := range msgs {
			if m.Offset >= after {
				t.Errorf("offset %d at or after the batches' end %d", m.Offset, after)
			}
		}
	})
}

// BenchmarkAppendRecords parses a fetch's worth of lz4 batches of 256
// events like citywatch's (varied, about 250 bytes of JSON).
func BenchmarkAppendRecords(b *testing.B) {
	rnd := rand.New(rand.NewPCG(1, 2))
	var in []byte
	for batch := range 16 {
		recs := make([]protocol.Record, 256)
		for i := range recs {
			v := fmt.Sprintf(`{"id":"%016x","type":"checkpoint.pass","device_id":"kk-%04d","time":"2026-11-26T08:15:%02d.%03d+08:00",`+
				`"lat":32.%06d,"lon":112.%06d,"lane":%d,"plate":"鄂F%05d","plate_color":"blue","vehicle_type":"car","speed_kmh":%d.%d}`,
				rnd.Uint64(), rnd.IntN(10000), rnd.IntN(60), rnd.IntN(1000), rnd.IntN(1e6), rnd.IntN(1e6), 1+rnd.IntN(4), rnd.IntN(1e5), rnd.IntN(120), rnd.IntN(10))
			recs[i] = record(fmt.Sprintf("kk-%04d", rnd.IntN(10000)), v)
			recs[i].Headers = []protocol.Header{{Key: "published_ms", Value: []byte("1700000000000")}}
		}
		in = append(in, encodeBatch(b, int64(batch*256), compress.Lz4, recs...)...)
	}
	var msgs []kafka.Message
	bs := batches{}
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		bs.rest = in
		for range 16 {
			var err error
			if msgs, _, err = bs.next(msgs[:0], "t", 0); err != nil || len(msgs) != 256 {
				b.Fatal(err, len(msgs))
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*16*256), "ns/record")
}

// BenchmarkPartitionReader reads 25,600 records of citywatch's size (lz4,
// in batches of 256 as ingest writes them) from the in-process broker:
// fetches and parsing together, the cost a restart's replay pays for
// each record before decoding it.
func BenchmarkPartitionReader(b *testing.B) {
	c := Config{Partitions: 1}
	c.SetDefaults()
	broker, err := StartEmbedded(c)
	if err != nil {
		b.Fatal(err)
	}
	defer broker.Close()
	c.Brokers = broker.Brokers()
	topic := c.Topic(TopicEvents)
	if err := EnsureTopics(b.Context(), c, TopicEvents); err != nil {
		b.Fatal(err)
	}
	w := c.NewWriter()
	rnd := rand.New(rand.NewPCG(1, 2))
	const n = 25_600
	for range n / 256 {
		msgs := make([]kafka.Message, 256)
		for i := range msgs {
			msgs[i] = kafka.Message{Topic: topic, Key: fmt.Appendf(nil, "kk-%04d", rnd.IntN(10000)),
				Value: fmt.Appendf(nil, `{"id":"%016x","type":"checkpoint.pass","device_id":"kk-%04d","time":"2026-11-26T08:15:%02d.%03d+08:00",`+
					`"lat":32.%06d,"lon":112.%06d,"lane":%d,"plate":"鄂F%05d","plate_color":"blue","vehicle_type":"car","speed_kmh":%d.%d}`,
					rnd.Uint64(), rnd.IntN(10000), rnd.IntN(60), rnd.IntN(1000), rnd.IntN(1e6), rnd.IntN(1e6), 1+rnd.IntN(4), rnd.IntN(1e5), rnd.IntN(120), rnd.IntN(10)),
				Headers: []kafka.Header{{Key: "published_ms", Value: []byte("1700000000000")}}}
		}
		if err := w.WriteMessages(b.Context(), msgs...); err != nil {
			b.Fatal(err)
		}
	}
	w.Close()
	b.ReportAllocs()
	for b.Loop() {
		pr, err := OpenPartition(b.Context(), c, topic, 0)
		if err != nil {
			b.Fatal(err)
		}
		read := 0
		if err := pr.Each(func(*kafka.Message) { read++ }); err != nil || read != n {
			b.Fatal(err, read)
		}
		pr.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
}

// TestFetcherPartitionError checks that a partition's error in a fetch
// response comes back as kafka-go's error, and that the connection goes
// on: the response was read whole.
func TestFetcherPartitionError(t *testing.T) {
	c := testBroker(t)
	topic := c.Topic(TopicEvents)
	writePartition(t, c, topic, 0, "a")
	pr, err := OpenPartition(t.Context(), c, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if err := pr.f.fetch(1_000, maxFetchBytes, 0); !errors.Is(err, kafka.OffsetOutOfRange) {
		t.Fatalf("fetch past the end: %v, want %v", err, kafka.OffsetOutOfRange)
	}
	m, ok, err := pr.Read()
	if err != nil || !ok || string(m.Value) != "a" {
		t.Errorf("read after the error: %q %v %v", m.Value, ok, err)
	}
}

// TestPartitionReaderFollow follows a partition past the end it had when
// it opened, gives the high watermark with each message, returns nothing
// when nothing is written within its wait, and ends a wait when closed.
func TestPartitionReaderFollow(t *testing.T) {
	c := testBroker(t)
	topic := c.Topic(TopicEvents)
	write := func(vs ...string) { writePartition(t, c, topic, 2, vs...) }
	write("a", "b")
	pr, err := OpenPartition(t.Context(), c, topic, 2)
	if err != nil {
		t.Fatal(err)
	}
	pr.Next = 1
	write("c")
	var got []string
	for len(got) < 2 {
		m, ok, err := pr.Follow(time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			got = append(got, fmt.Sprintf("%s@%d/%d", m.Value, m.Offset, m.HighWaterMark))
		}
	}
	if want := []string{"b@1/3", "c@2/3"}; !slices.Equal(got, want) {
		t.Errorf("followed %v, want %v", got, want)
	}
	if m, ok, err := pr.Follow(10 * time.Millisecond); ok || err != nil {
		t.Errorf("nothing written: %q %v %v", m.Value, ok, err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := pr.Follow(time.Minute)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // let it wait (the test passes either way)
	pr.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a closed reader's wait ended without an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the wait")
	}
}

// writePartition writes values to partition p of topic, in one batch.
func writePartition(t *testing.T, c Config, topic string, p int, vs ...string) {
	t.Helper()
	w := c.NewWriter()
	defer w.Close()
	w.Balancer = kafka.BalancerFunc(func(kafka.Message, ...int) int { return p })
	var msgs []kafka.Message
	for _, v := range vs {
		msgs = append(msgs, kafka.Message{Topic: topic, Value: []byte(v)})
	}
	if err := w.WriteMessages(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
}

// FuzzRecordsRoundTrip writes records made of the fuzzer's bytes with
// kafka-go's encoder, in every codec, and checks that the fetcher's parser
// reads back the same offsets, times, keys, values and headers.
func FuzzRecordsRoundTrip(f *testing.F) {
	f.Add(uint8(3), int64(1_700_000_000_000), []byte("key\x00value\x00h=v\x01second\x00"))
	f.Add(uint8(0), int64(1), []byte("\x00\x00\x00"))
	f.Add(uint8(4), int64(0), bytes.Repeat([]byte("abc\x00defg\x01"), 300))
	f.Fuzz(func(t *testing.T, codec uint8, t0 int64, data []byte) {
		c := compress.Compression(codec % 5)
		// A time kafka-go writes as it was given: after 1970 (it writes
		// the time of writing for 0), before 2109.
		t0 = 1 + t0&(1<<42-1)
		var recs []protocol.Record
		var want []got
		for i, rec := range bytes.Split(data, []byte{1}) {
			parts := bytes.SplitN(rec, []byte{0}, 3)
			r := protocol.Record{Time: time.UnixMilli(t0 + int64(i))}
			g := got{Offset: int64(i), Time: recordTime(t0 + int64(i))}
			if len(parts) > 0 && len(parts[0]) > 0 {
				r.Key, g.Key = protocol.NewBytes(parts[0]), parts[0]
			}
			if len(parts) > 1 {
				r.Value, g.Value = protocol.NewBytes(parts[1]), parts[1]
			}
			if len(parts) > 2 {
				k, v, _ := bytes.Cut(parts[2], []byte("="))
				r.Headers = []protocol.Header{{Key: string(k), Value: v}}
				g.Headers = []kafka.Header{{Key: string(k), Value: v}}
			}
			recs = append(recs, r)
			want = append(want, g)
		}
		in := encodeBatch(t, 0, c, recs...)
		msgs, bs, err := appendRecords(nil, in, "t", 0)
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		if diff := cmp.Diff(want, gotOf(msgs), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%v (-written +read):\n%s", c, diff)
		}
		if bs.after != int64(len(recs)) {
			t.Errorf("%v: after %d, want %d", c, bs.after, len(recs))
		}
	})
}

// TestFollow follows a partition through a helper that skips what
// retention removed before it was read, and stops when its context ends.
func TestFollow(t *testing.T) {
	const topic = "follow"
	c, cl := seededBroker(t, topic, 1)
	writePartition(t, c, topic, 0, "a", "b")
	if err := cl.DeleteRecords(topic, 0, 1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan string, 10)
	done := make(chan struct{})
	var logged bytes.Buffer
	go func() {
		defer close(done)
		Follow(ctx, c, topic, 0, 0, slog.New(slog.NewTextHandler(&logged, nil)), func(m *kafka.Message) {
			got <- fmt.Sprintf("%s@%d", m.Value, m.Offset)
		})
	}()
	if g := <-got; g != "b@1" {
		t.Errorf("first message %s, want b@1 (a was deleted)", g)
	}
	writePartition(t, c, topic, 0, "c")
	if g := <-got; g != "c@2" {
		t.Errorf("then %s, want c@2", g)
	}
	cancel()
	<-done
	if !strings.Contains(logged.String(), "records gone from the log") {
		t.Errorf("no warning of the deleted record; log:\n%s", logged.String())
	}
}
