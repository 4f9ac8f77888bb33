package e2e

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"

	"citywatch/ingest"
	"citywatch/internal/kafkaio"
	"citywatch/internal/kafkaio/kafkatest"
	"citywatch/simulators"
	"citywatch/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// kafka-go's shared transport keeps idle connections for reuse.
		goleak.IgnoreTopFunction("github.com/segmentio/kafka-go.(*connPool).discover"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreAnyFunction("github.com/segmentio/kafka-go.(*conn).run"),
	)
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// pipeline is one broker, one ClickHouse database and the roles of the
// foundation (ingest and sink), with their logs and metrics captured.
type pipeline struct {
	t      *testing.T
	kc     kafkaio.Config
	chCfg  store.Config
	reg    *prometheus.Registry
	km     *kafkaio.Metrics
	logs   *syncBuffer
	log    *slog.Logger
	key    []byte
	writer *kafka.Writer
}

func newPipeline(t *testing.T, chCfg store.Config) *pipeline {
	t.Helper()
	return newPipelineOn(t, chCfg, kafkatest.Broker(t, 4))
}

// newPipelineOn is newPipeline with the broker at kc.
func newPipelineOn(t *testing.T, chCfg store.Config, kc kafkaio.Config) *pipeline {
	t.Helper()
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	p := &pipeline{
		t: t, kc: kc, chCfg: chCfg, reg: reg,
		km:   kafkaio.NewMetrics(reg),
		logs: logs,
		log:  slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		key:  []byte("test-pseudonym-key-0123456789abcdef"),
	}
	p.writer = kc.NewWriter()
	t.Cleanup(func() { p.writer.Close() })
	return p
}

// start runs f in a goroutine and returns a func that stops it and returns
// its error; the test fails if it does not stop within a minute.
func (p *pipeline) start(ctx context.Context, name string, f func(context.Context) error) (stop func() error) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(time.Minute):
			p.t.Fatalf("%s did not stop within a minute", name)
			return nil
		}
	}
}

func (p *pipeline) newIngest(reg prometheus.Registerer) *ingest.Ingest {
	p.t.Helper()
	in, err := ingest.New(ingest.Config{Workers: 2}, p.kc, p.key, p.writer, reg, p.km, p.log)
	if err != nil {
		p.t.Fatal(err)
	}
	return in
}

func (p *pipeline) openDB(ctx context.Context) *store.DB {
	p.t.Helper()
	db, err := store.Open(ctx, p.chCfg)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		p.t.Fatal(err)
	}
	return db
}

func (p *pipeline) newSink(db *store.DB, reg prometheus.Registerer) *store.Sink {
	p.t.Helper()
	s, err := store.NewSink(store.SinkConfig{MaxWait: 200 * time.Millisecond}, p.kc, db, reg, p.km, p.log)
	if err != nil {
		p.t.Fatal(err)
	}
	return s
}

func (p *pipeline) produce(ctx context.Context, msgs []simulators.Message) {
	p.t.Helper()
	batch := make([]kafka.Message, 0, 500)
	for i, m := range msgs {
		batch = append(batch, kafka.Message{Topic: p.kc.Topic(m.Topic), Key: m.Key, Value: m.Value})
		if len(batch) == cap(batch) || i == len(msgs)-1 {
			if err := p.writer.WriteMessages(ctx, batch...); err != nil {
				p.t.Fatalf("cannot produce: %v", err)
			}
			batch = batch[:0]
		}
	}
}

// expectation is what a generated stream must leave in storage.
type expectation struct {
	ids      map[string]bool // valid event ids
	rejected int
	personal []string // buyer ID numbers and names that must never appear
}

func expect(msgs []simulators.Message) expectation {
	e := expectation{ids: map[string]bool{}}
	for _, m := range msgs {
		switch m.Want {
		case simulators.WantEvent:
			e.ids[m.ID] = true
		case simulators.WantReject:
			e.rejected++
		}
		if m.BuyerID != "" {
			e.personal = append(e.personal, m.BuyerID, m.BuyerName)
		}
	}
	return e
}

// waitStored polls storage until it holds exactly what e expects, or fails
// after a generous deadline with what it saw.
func waitStored(ctx context.Context, t *testing.T, db *store.DB, e expectation, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var ids map[string]int
	var rejected uint64
	for {
		var err error
		ids, err = db.EventIDs(ctx)
		if err == nil {
			var rej map[string]uint64
			rej, err = countRejected(ctx, db)
			rejected = 0
			for _, n := range rej {
				rejected += n
			}
		}
		if err == nil && len(ids) >= len(e.ids) && rejected >= uint64(e.rejected) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("storage holds %d of %d events and %d of %d rejected messages after %v (last error: %v)", len(ids), len(e.ids), rejected, e.rejected, within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var missing, extra, twice []string
	for id := range e.ids {
		switch n := ids[id]; {
		case n == 0:
			missing = append(missing, id)
		case n > 1:
			twice = append(twice, id)
		}
	}
	for id := range ids {
		if !e.ids[id] {
			extra = append(extra, id)
		}
	}
	if len(missing)+len(extra)+len(twice) > 0 || rejected != uint64(e.rejected) {
		t.Fatalf("stored events: %d missing (%q), %d unexpected (%q), %d counted twice (%q); rejected %d, want %d",
			len(missing), firstFew(missing), len(extra), firstFew(extra), len(twice), firstFew(twice), rejected, e.rejected)
	}
}

// firstFew returns the first five of ids, for a failure message.
func firstFew(ids []string) []string { return ids[:min(len(ids), 5)] }

func countRejected(ctx context.Context, db *store.DB) (map[string]uint64, error) {
	m, err := db.CountRejected(ctx)
	out := map[string]uint64{}
	for k, v := range m {
		out[string(k)] = v
	}
	return out, err
}

// dumpTables returns every row of every table of the test database as text.
func dumpTables(ctx context.Context, t *testing.T, cfg store.Config) string {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: cfg.Addr, Auth: clickhouse.Auth{Username: cfg.User, Password: cfg.Password}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Materialized views and the rollups they feed hold aggregate states of
	// ids (hashes, no personal field) that the driver cannot read; the
	// rows they come from are in the tables dumped.
	rows, err := conn.Query(ctx, `SELECT name FROM system.tables WHERE database = ? AND engine != 'MaterializedView'
		AND name NOT IN (SELECT table FROM system.columns WHERE database = ? AND type LIKE 'AggregateFunction%')`, cfg.Database, cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	var sb strings.Builder
	for _, table := range tables {
		rows, err := conn.Query(ctx, fmt.Sprintf("SELECT * FROM `%s`.`%s`", cfg.Database, table))
		if err != nil {
			t.Fatalf("cannot dump %s: %v", table, err)
		}
		types := rows.ColumnTypes()
		for rows.Next() {
			vals := make([]any, len(types))
			for i, ct := range types {
				vals[i] = reflect.New(ct.ScanType()).Interface()
			}
			if err := rows.Scan(vals...); err != nil {
				t.Fatalf("cannot scan %s: %v", table, err)
			}
			for _, v := range vals {
				fmt.Fprintf(&sb, "%v\t", reflect.ValueOf(v).Elem().Interface())
			}
			sb.WriteByte('\n')
		}
		rows.Close()
	}
	return sb.String()
}

func gatherMetrics(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
			t.Fatal(err)
		}
	}
	return buf.String()
}

// readTopic returns every message of a topic from the start.
func readTopic(ctx context.Context, t *testing.T, kc kafkaio.Config, topic string) []kafka.Message {
	t.Helper()
	client := kc.Client()
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	var out []kafka.Message
	for _, tp := range meta.Topics {
		for _, part := range tp.Partitions {
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: kc.Brokers, Topic: topic, Partition: part.ID, MaxWait: 50 * time.Millisecond})
			last, err := func() (int64, error) {
				conn, err := kafka.DialLeader(ctx, "tcp", kc.Brokers[0], topic, part.ID)
				if err != nil {
					return 0, err
				}
				defer conn.Close()
				return conn.ReadLastOffset()
			}()
			if err != nil {
				r.Close()
				t.Fatal(err)
			}
			for off := int64(0); off < last; off++ {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					r.Close()
					t.Fatal(err)
				}
				out = append(out, m)
				off = m.Offset
			}
			r.Close()
		}
	}
	return out
}
