package kafkaio

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/segmentio/kafka-go.(*connPool).discover"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreAnyFunction("github.com/segmentio/kafka-go.(*conn).run"),
	)
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"defaults", func(*Config) {}, ""},
		{"no brokers", func(c *Config) { c.Brokers = nil }, "kafka.brokers"},
		{"bad broker", func(c *Config) { c.Brokers = []string{"nohost"} }, "not host:port"},
		{"partitions", func(c *Config) { c.Partitions = -1 }, "kafka.partitions"},
		{"batch", func(c *Config) { c.BatchSize = -1 }, "kafka.batch_size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Brokers: []string{"127.0.0.1:9092"}}
			c.SetDefaults()
			tt.edit(&c)
			err := c.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestWriterAndReaderSettings(t *testing.T) {
	c := Config{Brokers: []string{"127.0.0.1:9092"}}
	c.SetDefaults()
	w := c.NewWriter()
	if w.BatchTimeout > 10*time.Millisecond || w.RequiredAcks != kafka.RequireAll || w.Async {
		t.Errorf("writer settings: timeout %v, acks %v, async %v", w.BatchTimeout, w.RequiredAcks, w.Async)
	}
	r := c.NewReader("g", []string{"t"})
	defer r.Close()
	if cfg := r.Config(); cfg.CommitInterval != 0 || cfg.StartOffset != kafka.FirstOffset {
		t.Errorf("reader settings: commit interval %v, start %v", cfg.CommitInterval, cfg.StartOffset)
	}
}

// collector is a Handler that records what it is given and can fail.
type collector struct {
	mu       sync.Mutex
	pending  []string
	flushed  []string
	failures int // Flush fails this many times first
	flushes  int
}

func (c *collector) Add(m *kafka.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, string(m.Value))
}

func (c *collector) Full() bool { return false }

func (c *collector) Flush(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushes++
	if c.failures > 0 {
		c.failures--
		return errors.New("store unavailable")
	}
	c.flushed = append(c.flushed, c.pending...)
	c.pending = c.pending[:0]
	return nil
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.flushed)
}

func testBroker(t *testing.T) Config {
	t.Helper()
	c := Config{Partitions: 3}
	c.SetDefaults()
	b, err := StartEmbedded(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	c.Brokers = b.Brokers()
	return c
}

func produce(t *testing.T, c Config, topic string, n int) {
	t.Helper()
	w := c.NewWriter()
	defer w.Close()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))}
	}
	if err := w.WriteMessages(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConsumerRetriesFlushThenCommits(t *testing.T) {
	c := testBroker(t)
	topic := c.Topic(TopicEvents)
	produce(t, c, topic, 100)
	m := NewMetrics(prometheus.NewRegistry())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	h := &collector{failures: 3}
	cons := NewConsumer(c, ConsumerConfig{Group: "g1", Topics: []string{topic}, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond}, m, log, h)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- cons.Run(ctx) }()
	waitFor(t, "100 flushed messages", func() bool { return h.count() == 100 })
	client := c.Client()
	waitFor(t, "lag 0", func() bool {
		lag, err := TotalLag(t.Context(), client, "g1", []string{topic})
		return err == nil && lag == 0
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if h.flushes < 4 {
		t.Errorf("flushed %d times; the 3 failures were not retried", h.flushes)
	}
}

func TestConsumerCrashBeforeCommitReplays(t *testing.T) {
	c := testBroker(t)
	topic := c.Topic(TopicEvents)
	produce(t, c, topic, 50)
	m := NewMetrics(prometheus.NewRegistry())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	h := &collector{}
	cons := NewConsumer(c, ConsumerConfig{Group: "g2", Topics: []string{topic}}, m, log, h)
	cons.SetBeforeCommit(func() error { return errors.New("killed") })
	if err := cons.Run(t.Context()); err == nil {
		t.Fatal("Run returned nil after the crash hook failed")
	}
	first := h.count()
	if first == 0 {
		t.Fatal("nothing flushed before the crash")
	}

	// Nothing was committed: the group's lag is still everything.
	sum, err := TotalLag(t.Context(), c.Client(), "g2", []string{topic})
	if err != nil {
		t.Fatal(err)
	}
	if sum != 50 {
		t.Errorf("lag after crash = %d, want 50 (nothing committed)", sum)
	}

	h2 := &collector{}
	cons2 := NewConsumer(c, ConsumerConfig{Group: "g2", Topics: []string{topic}}, m, log, h2)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- cons2.Run(ctx) }()
	waitFor(t, "all 50 replayed", func() bool { return h2.count() == 50 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestEnsureTopicsIsIdempotent(t *testing.T) {
	c := testBroker(t)
	for range 2 {
		if err := EnsureTopics(t.Context(), c, "extra"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestOffsetAt looks up a partition by time: the first message written at
// or after the time, or the end when there is none, never -1 (which a
// reader takes as the end at its first fetch, skipping what was written
// meanwhile).
func TestOffsetAt(t *testing.T) {
	c := testBroker(t)
	topic := c.Topic(TopicPatrol)
	at := func(since time.Time) int64 {
		t.Helper()
		off, err := OffsetAt(t.Context(), c, topic, 0, since)
		if err != nil {
			t.Fatal(err)
		}
		return off
	}
	if off := at(time.Unix(0, 0)); off != 0 {
		t.Errorf("empty partition: offset %d, want 0", off)
	}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	w := c.NewWriter()
	defer w.Close()
	w.Balancer = kafka.BalancerFunc(func(kafka.Message, ...int) int { return 0 })
	if err := w.WriteMessages(t.Context(),
		kafka.Message{Topic: topic, Value: []byte("a"), Time: t0},
		kafka.Message{Topic: topic, Value: []byte("b"), Time: t0.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		since time.Time
		want  int64
	}{
		{time.Unix(0, 0), 0},
		{t0, 0},
		{t0.Add(time.Second), 1},
		{t0.Add(time.Minute), 1},
		{t0.Add(2 * time.Minute), 2}, // none at or after: the end
	} {
		if off := at(tc.since); off != tc.want {
			t.Errorf("at %v: offset %d, want %d", tc.since.Sub(t0), off, tc.want)
		}
	}
}

// TestBounds reads each partition's first and end offsets, an empty
// partition's and a cut one's included, and the time of a first record.
func TestBounds(t *testing.T) {
	const topic = "bounds"
	c, cl := seededBroker(t, topic, 3)
	w := c.NewWriter()
	defer w.Close()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	var msgs []kafka.Message
	for i := range 7 {
		p := 0
		if i >= 5 {
			p = 2
		}
		msgs = append(msgs, kafka.Message{Topic: topic, Partition: p, Value: []byte("x"), Time: t0.Add(time.Duration(i) * time.Minute)})
	}
	w.Balancer = kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return m.Partition })
	if err := w.WriteMessages(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	if err := cl.DeleteRecords(topic, 0, 2); err != nil {
		t.Fatal(err)
	}
	got, err := Bounds(t.Context(), c.Client(), topic, true)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]Span{0: {2, 5}, 1: {0, 0}, 2: {0, 2}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("bounds (-want +got):\n%s", diff)
	}
	ends, err := EndOffsets(t.Context(), c.Client(), topic)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[int]int64{0: 5, 1: 0, 2: 2}, ends); diff != "" {
		t.Errorf("end offsets (-want +got):\n%s", diff)
	}
	at, err := RecordTime(t.Context(), c.Client(), topic, 0, got[0].First)
	if err != nil {
		t.Fatal(err)
	}
	if want := t0.Add(2 * time.Minute); !at.Equal(want) {
		t.Errorf("first record's time %v, want %v", at, want)
	}
}

// seededBroker starts a broker holding topic (a full name) with
// partitions, for tests that delete records through the cluster.
func seededBroker(t *testing.T, topic string, partitions int) (Config, *kfake.Cluster) {
	t.Helper()
	cl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(partitions), topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	c := Config{Partitions: partitions}
	c.SetDefaults()
	c.Brokers = cl.ListenAddrs()
	return c, cl
}
