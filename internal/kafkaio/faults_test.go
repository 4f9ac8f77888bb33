package kafkaio

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The tests of this file inject broker faults with kfake (errors on
// produce, fetch and offset commit; a broker slow to answer every
// request) and check what the writers, the Outbox and the Consumer make of
// them: retries bounded by Config.MaxAttempts, no message lost or reported
// written when it was not, and a metric and a log line for what happened.

// faultBroker starts a broker of 3-partition topics and returns its
// config and the cluster, to inject faults into.
func faultBroker(t *testing.T) (Config, *kfake.Cluster) {
	t.Helper()
	c := Config{Partitions: 3}
	c.SetDefaults()
	b, err := StartEmbedded(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	c.Brokers = b.Brokers()
	return c, b.cluster
}

// logSink keeps what a test's logger writes, and shows it if the test
// fails.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func newLog(t *testing.T) (*slog.Logger, *logSink) {
	s := &logSink{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(s.String())
		}
	})
	return slog.New(slog.NewTextHandler(s, nil)), s
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// count returns how many lines hold substr.
func (s *logSink) count(substr string) int {
	n := 0
	for l := range strings.Lines(s.String()) {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

func counter(c prometheus.Counter) float64 {
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		panic(err)
	}
	return d.GetCounter().GetValue()
}

func messages(topic string, n int) []kafka.Message {
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Topic: topic, Key: []byte("k" + strconv.Itoa(i%7)), Value: []byte(strconv.Itoa(i))}
	}
	return msgs
}

// readTopic returns the values on topic, by partition, in offset order.
func readTopic(t *testing.T, c Config, topic string) map[int][]string {
	t.Helper()
	out := map[int][]string{}
	for p := range c.Partitions {
		pr, err := OpenPartition(t.Context(), c, topic, p)
		if err != nil {
			t.Fatal(err)
		}
		err = pr.Each(func(m *kafka.Message) { out[p] = append(out[p], string(m.Value)) })
		pr.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// checkDelivered checks that topic holds the n values of messages(n),
// each once (or at least once, when duplicates are allowed), and that in
// every partition their first copies are in the order written.
func checkDelivered(t *testing.T, c Config, topic string, n int, duplicatesAllowed bool) (duplicates int) {
	t.Helper()
	seen := map[int]int{}
	for p, vs := range readTopic(t, c, topic) {
		last := -1
		for _, v := range vs {
			i, err := strconv.Atoi(v)
			if err != nil || i < 0 || i >= n {
				t.Errorf("partition %d holds %q, not a value written", p, v)
				continue
			}
			if seen[i]++; seen[i] > 1 {
				duplicates++
				continue
			}
			if i < last {
				t.Errorf("partition %d: %d after %d, out of the order written", p, i, last)
			}
			last = i
		}
	}
	for i := range n {
		if seen[i] == 0 {
			t.Errorf("message %d lost", i)
		}
	}
	if duplicates > 0 && !duplicatesAllowed {
		t.Errorf("%d messages written twice", duplicates)
	}
	return duplicates
}

// TestFaultProduceRetriableRecovers fails the first produce requests with
// retriable errors: the writer retries them (each attempt logged and
// counted) and the write succeeds with every message delivered as the
// writer promises: once when the broker refused the request, at least
// once when it timed out after appending (kafka-go's writer is not
// idempotent; downstream dedupes by event or alert id).
func TestFaultProduceRetriableRecovers(t *testing.T) {
	for _, tt := range []struct {
		err        *kerr.Error
		faults     int
		duplicates bool
	}{
		{kerr.NotLeaderForPartition, 4, false}, // MaxAttempts is 5: the fifth try of the unlucky batch lands
		{kerr.RequestTimedOut, 3, true},        // appended, then answered with the error
	} {
		t.Run(tt.err.Message, func(t *testing.T) {
			c, cl := faultBroker(t)
			topic := c.Topic(TopicEvents)
			log, logs := newLog(t)
			m := NewMetrics(prometheus.NewRegistry())
			w := m.WatchWriter(c.NewWriter(), log)
			defer w.Close()
			f := cl.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: tt.err, Count: tt.faults})

			if err := w.WriteMessages(t.Context(), messages(topic, 100)...); err != nil {
				t.Fatalf("write failed after %d faults: %v", f.Hits(), err)
			}
			if f.Hits() != tt.faults {
				t.Errorf("%d requests faulted, want %d", f.Hits(), tt.faults)
			}
			if got := counter(m.attemptErrs.WithLabelValues(topic)); got != float64(tt.faults) {
				t.Errorf("citywatch_kafka_produce_attempt_errors_total = %v, want %d", got, tt.faults)
			}
			if got := logs.count(tt.err.Message); got != tt.faults {
				t.Errorf("%d log lines name %s, want one per failed attempt (%d)", got, tt.err.Message, tt.faults)
			}
			d := checkDelivered(t, c, topic, 100, tt.duplicates)
			t.Logf("%d requests faulted, retried; 100 messages delivered, %d written twice", f.Hits(), d)
		})
	}
}

// TestFaultProducePersistentFails keeps the broker failing produce
// requests: a write fails after MaxAttempts tries of a retriable error and
// after one of a non-retriable one; the Outbox reports the failure (an
// error, counted and short enough to log), keeps every message queued in
// order, and writes each exactly once when the broker recovers. With one
// partition failing, what the healthy partitions took is not written
// again by the retries.
func TestFaultProducePersistentFails(t *testing.T) {
	for _, tt := range []struct {
		name       string
		err        *kerr.Error
		partitions []int32
		attempts   int // produce requests per failing partition
	}{
		{"retriable", kerr.NotLeaderForPartition, nil, 5},
		{"not retriable", kerr.InvalidRecord, nil, 1},
		{"one partition", kerr.NotLeaderForPartition, []int32{1}, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, cl := faultBroker(t)
			topic := c.Topic(TopicAlerts)
			log, logs := newLog(t)
			m := NewMetrics(prometheus.NewRegistry())
			w := m.WatchWriter(c.NewWriter(), log)
			defer w.Close()
			f := cl.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Partitions: tt.partitions, Err: tt.err, Count: -1})

			const n = 60
			o := NewOutbox("alerts", topic, m)
			o.Add(messages(topic, n)...)
			const flushes = 2
			for range flushes {
				err := o.Flush(t.Context(), w)
				if err == nil {
					t.Fatal("Flush succeeded while the broker fails every produce request")
				}
				if !errors.Is(err, kafka.Error(tt.err.Code)) {
					t.Errorf("Flush error %q does not wrap %s", err, tt.err.Message)
				}
				if len(err.Error()) > 400 {
					t.Errorf("Flush error is %d bytes long: %.200s…", len(err.Error()), err)
				}
			}
			failing := 3
			if tt.partitions != nil {
				failing = len(tt.partitions)
			}
			if want := flushes * failing * tt.attempts; f.Hits() != want {
				t.Errorf("%d produce requests in %d flushes, want %d (%d per failing partition and flush)", f.Hits(), flushes, want, tt.attempts)
			}
			if got := counter(m.attemptErrs.WithLabelValues(topic)); got != float64(f.Hits()) {
				t.Errorf("citywatch_kafka_produce_attempt_errors_total = %v, want one per failed request (%d)", got, f.Hits())
			}
			if got := counter(m.produceErrs.WithLabelValues(topic)); got != flushes {
				t.Errorf("citywatch_kafka_produce_errors_total = %v, want %d", got, flushes)
			}
			written := 0
			for _, vs := range readTopic(t, c, topic) {
				written += len(vs)
			}
			if got := counter(m.produced.WithLabelValues(topic)); got != float64(written) {
				t.Errorf("citywatch_kafka_produced_messages_total = %v while the topic holds %d", got, written)
			}
			if o.Len()+written != n {
				t.Errorf("outbox holds %d and the topic %d of %d messages", o.Len(), written, n)
			}
			if tt.partitions == nil && written != 0 {
				t.Errorf("%d messages on the topic while every partition fails", written)
			}
			if logs.count(tt.err.Message) < f.Hits() {
				t.Errorf("%d failed attempts, %d logged", f.Hits(), logs.count(tt.err.Message))
			}

			f.Remove()
			if err := o.Flush(t.Context(), w); err != nil {
				t.Fatalf("Flush after the broker recovered: %v", err)
			}
			if o.Len() != 0 {
				t.Errorf("outbox holds %d messages after a successful flush", o.Len())
			}
			checkDelivered(t, c, topic, n, false)
			t.Logf("%d produce requests failed over %d flushes, %d messages written by the healthy partitions meanwhile; all %d delivered once after recovery", f.Hits(), flushes, written, n)
		})
	}
}

// consume runs a consumer of topic in group feeding h until stop is
// called; stop returns Run's error.
func consume(t *testing.T, c Config, group, topic string, m *Metrics, log *slog.Logger, h Handler) (stop func() error) {
	t.Helper()
	cons := NewConsumer(c, ConsumerConfig{Group: group, Topics: []string{topic}, BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond}, m, log, h)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- cons.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(time.Minute):
				t.Fatal("consumer did not stop within a minute")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func lagOf(t *testing.T, c Config, group, topic string) int64 {
	t.Helper()
	lag, err := TotalLag(t.Context(), c.Client(), group, []string{topic})
	if err != nil {
		t.Fatal(err)
	}
	return lag
}

// values returns what h flushed, as a sorted list of numbers.
func (c *collector) values() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]int, 0, len(c.flushed))
	for _, v := range c.flushed {
		i, _ := strconv.Atoi(v)
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

func upTo(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// TestFaultFetch fails fetches while input arrives: errors kafka-go
// handles by itself (a leader that moved, an offset it checks against the
// log's bounds) and one it reports (an unknown server error). The
// consumer goes on once the broker recovers and takes every message once,
// none skipped; the failed fetches are counted and logged, each count with
// its line. kafka-go reports every other fetch error of the reported kind
// only: after one it closes the connection at the next request, whose
// answer it drops unread; and it retries at once, without a word, an
// offset out of range that it finds within the log.
func TestFaultFetch(t *testing.T) {
	const faults = 12
	for _, tt := range []struct {
		err     *kerr.Error
		counted int // at least
	}{
		{kerr.NotLeaderForPartition, faults},
		{kerr.UnknownServerError, faults / 2},
		{kerr.OffsetOutOfRange, 0},
	} {
		e := tt.err
		t.Run(e.Message, func(t *testing.T) {
			c, cl := faultBroker(t)
			topic := c.Topic(TopicEvents)
			log, logs := newLog(t)
			m := NewMetrics(prometheus.NewRegistry())
			w := c.NewWriter()
			defer w.Close()
			msgs := messages(topic, 60)
			if err := w.WriteMessages(t.Context(), msgs[:30]...); err != nil {
				t.Fatal(err)
			}
			f := cl.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: topic, Err: e, Count: faults})
			h := &collector{}
			stop := consume(t, c, "fetch", topic, m, log, h)
			if err := f.Wait(t.Context(), faults); err != nil {
				t.Fatal(err)
			}
			if err := w.WriteMessages(t.Context(), msgs[30:]...); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "60 messages consumed", func() bool { return h.count() >= 60 })
			waitFor(t, "lag 0", func() bool { return lagOf(t, c, "fetch", topic) == 0 })
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if got := h.values(); !slices.Equal(got, upTo(60)) {
				t.Errorf("consumed %v, want 0…59 once each", got)
			}
			logged := logs.count("cannot read from Kafka") + logs.count("cannot fetch message")
			counted := int(counter(m.readErrs.WithLabelValues("fetch")))
			if counted < tt.counted {
				t.Errorf("citywatch_kafka_read_errors_total = %d after %d failed fetches, want ≥ %d", counted, faults, tt.counted)
			}
			if logged != counted {
				t.Errorf("%d read errors counted, %d logged", counted, logged)
			}
			t.Logf("%d fetches failed, %d read errors counted and logged; 60 of 60 messages consumed once", faults, counted)
		})
	}
}

// TestFaultCommitReplays fails offset commits: each failure is counted and
// logged, nothing stops, and the input whose offsets were not committed is
// delivered again after a restart rather than lost; the earlier input,
// committed before the fault, is not.
func TestFaultCommitReplays(t *testing.T) {
	c, cl := faultBroker(t)
	topic := c.Topic(TopicEvents)
	log, logs := newLog(t)
	m := NewMetrics(prometheus.NewRegistry())
	w := c.NewWriter()
	defer w.Close()
	msgs := messages(topic, 60)
	if err := w.WriteMessages(t.Context(), msgs[:20]...); err != nil {
		t.Fatal(err)
	}
	first := &collector{}
	stop := consume(t, c, "commit", topic, m, log, first)
	waitFor(t, "the first 20 committed", func() bool { return lagOf(t, c, "commit", topic) == 0 && first.count() == 20 })

	f := cl.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.CoordinatorNotAvailable, Count: -1})
	if err := w.WriteMessages(t.Context(), msgs[20:]...); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "60 messages consumed", func() bool { return first.count() >= 60 })
	waitFor(t, "a failed commit", func() bool { return counter(m.commitErrors.WithLabelValues("commit")) > 0 })
	if err := stop(); err != nil {
		t.Fatalf("consumer stopped with %v; a failed commit must not stop it", err)
	}
	if lag := lagOf(t, c, "commit", topic); lag != 40 {
		t.Errorf("lag after the failed commits = %d, want the 40 uncommitted messages", lag)
	}
	if got := counter(m.commitErrors.WithLabelValues("commit")); logs.count("cannot commit offsets") != int(got) {
		t.Errorf("%v failed commits counted, %d logged", got, logs.count("cannot commit offsets"))
	}

	f.Remove()
	second := &collector{}
	stop = consume(t, c, "commit", topic, m, log, second)
	waitFor(t, "the uncommitted input replayed and committed", func() bool { return lagOf(t, c, "commit", topic) == 0 && second.count() >= 40 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := second.values(); !slices.Equal(got, upTo(60)[20:]) {
		t.Errorf("replayed %v, want 20…59 once each", got)
	}
	// Downstream dedupe (by event id, alert id, ReplacingMergeTree) sees
	// the replay as copies: together the two runs hold every message.
	union := slices.Compact(slices.Sorted(slices.Values(append(first.values(), second.values()...))))
	if !slices.Equal(union, upTo(60)) {
		t.Errorf("the two runs took %v, want 0…59", union)
	}
	t.Logf("%d commit requests failed (%v commits counted failed); 40 messages replayed after the restart, none lost", f.Hits(), counter(m.commitErrors.WithLabelValues("commit")))
}

// TestFaultSlowBroker delays every request by 200 ms: writes, the Outbox,
// a consumer group and a partition reader all go on more slowly, nothing
// is lost, and everything stops when told.
func TestFaultSlowBroker(t *testing.T) {
	c, cl := faultBroker(t)
	topic := c.Topic(TopicEvents)
	log, _ := newLog(t)
	m := NewMetrics(prometheus.NewRegistry())
	var mu sync.Mutex
	requests := 0
	cl.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		cl.KeepControl()
		mu.Lock()
		requests++
		mu.Unlock()
		cl.SleepControl(func() { time.Sleep(200 * time.Millisecond) })
		return nil, nil, false
	})

	w := m.WatchWriter(c.NewWriter(), log)
	defer w.Close()
	const n = 300
	msgs := messages(topic, n)
	start := time.Now()
	o := NewOutbox("events", topic, m)
	for i := 0; i < n; i += 50 {
		o.Add(msgs[i : i+50]...)
		if err := o.Flush(t.Context(), w); err != nil {
			t.Fatalf("write to a slow broker: %v", err)
		}
	}
	wrote := time.Since(start)

	h := &collector{}
	start = time.Now()
	stop := consume(t, c, "slow", topic, m, log, h)
	waitFor(t, "every message consumed", func() bool { return h.count() >= n })
	consumed := time.Since(start)

	// A partition reader without a group, as the rules' shards and the
	// dispatchers' tails use.
	rd := c.NewPartitionReader(topic, 0)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	onZero := 0
	end, err := rd.ReadLag(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range end {
		if _, err := rd.FetchMessage(ctx); err != nil {
			t.Fatalf("partition reader on a slow broker: %v after %d messages", err, onZero)
		}
		onZero++
	}
	cancel()
	rd.Close()

	start = time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Since(start)
	if got := h.values(); !slices.Equal(got, upTo(n)) {
		t.Errorf("consumed %d messages, want 0…%d once each", len(got), n-1)
	}
	waitFor(t, "lag 0", func() bool { return lagOf(t, c, "slow", topic) == 0 })
	mu.Lock()
	defer mu.Unlock()
	t.Logf("200 ms a request, %d requests: wrote %d messages in %v, consumed them in %v, read partition 0 (%d) alone, stopped in %v",
		requests, n, wrote.Round(time.Millisecond), consumed.Round(time.Millisecond), onZero, stopped.Round(time.Millisecond))
}
