package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/kafkaio"
	"citywatch/simulators"
	"citywatch/store"
	"citywatch/web"
)

// loadtestAll measures what the whole system carries on this machine and,
// in the same run and on the same events, the two limits any system built
// on these parts has here:
//
//  1. n raw events of the city mix are written to the raw topics of an
//     embedded broker, as a backlog;
//  2. a plain kafka-go consumer group reads the backlog without decoding
//     it: the broker's and the client's limit;
//  3. a plain clickhouse-go batch insert (PrepareBatch, one Append a row,
//     10,000 rows a batch) writes the same events, decoded beforehand, to a
//     table of five columns: the database's limit, with less to store than
//     citywatch's tables of thirty;
//  4. every role that does not face a device (ingest, rules, dispatch,
//     sink, web) is started as `citywatch run` starts them, on the backlog,
//     and the run ends when ClickHouse counts every event once.
//
// It prints each rate and the whole system's as a share of the lower limit.
func loadtestAll(ctx context.Context, cfg Config, n int, stdout io.Writer, log *slog.Logger) error {
	cfg.ClickHouse.Database = "citywatch_loadtest_" + strconv.FormatInt(time.Now().Unix(), 10)
	broker, err := kafkaio.StartEmbedded(cfg.Kafka)
	if err != nil {
		return err
	}
	defer broker.Close()
	broker.Use(&cfg.Kafka)
	if err := kafkaio.EnsureTopics(ctx, cfg.Kafka, kafkaio.AllTopics...); err != nil {
		return err
	}
	db, err := store.Open(ctx, cfg.ClickHouse)
	if err != nil {
		return fmt.Errorf("cannot reach ClickHouse: %w", err)
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		return err
	}
	defer func() {
		if err := db.DropDatabase(context.WithoutCancel(ctx)); err != nil {
			log.Warn("cannot drop load-test database", "err", err)
		}
	}()
	fmt.Fprintf(stdout, "loadtest --chain all: %d CPUs, GOMAXPROCS %d, %d events, ClickHouse %v\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), n, cfg.ClickHouse.Addr)

	// 1. The backlog.
	w := cfg.Kafka.NewWriter()
	load := simulators.NewLoad(21, cfg.Kafka.TopicPrefix, "la")
	values := make([][]byte, 0, n)
	var msgs []kafka.Message
	now := time.Now()
	raw := map[string]bool{}
	for len(values) < n {
		// A fresh arena a batch: values keeps every message.
		msgs, _ = load.Append(msgs[:0], nil, now, min(5000, n-len(values)))
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			w.Close()
			return fmt.Errorf("cannot produce: %w", err)
		}
		for _, m := range msgs {
			values = append(values, m.Value)
			raw[m.Topic] = true
		}
	}
	w.Close()
	topics := make([]string, 0, len(raw))
	for t := range raw {
		topics = append(topics, t)
	}

	// 2. A plain consumer group, no decoding.
	rd := cfg.Kafka.NewReader("loadtest-plain", topics)
	start := time.Now()
	for range n {
		if _, err := rd.FetchMessage(ctx); err != nil {
			rd.Close()
			return fmt.Errorf("plain consumer: %w", err)
		}
	}
	consumeTime := time.Since(start)
	rd.Close()
	fmt.Fprintf(stdout, "limit: plain kafka-go consumer group, no decoding:        %8.0f events/s\n", float64(n)/consumeTime.Seconds())

	// 3. A plain insert of the same events.
	insertTime, err := plainInsert(ctx, db, values)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "limit: plain clickhouse-go insert, 5 columns, 10,000 a batch: %8.0f events/s\n", float64(n)/insertTime.Seconds())
	limit := max(consumeTime.Seconds(), insertTime.Seconds()) // the slower of the two bounds the chain
	values = nil

	// 4. The system, every role in this process.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg.HTTP.Addr = addr
	dir, err := os.MkdirTemp("", "citywatch-loadtest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg.HTTP.UsersFile = filepath.Join(dir, "users.yaml")
	if _, err := web.DemoUsers(cfg.HTTP.UsersFile, "unit-001"); err != nil {
		return err
	}
	roles := map[string]bool{"ingest": true, "rules": true, "dispatch": true, "sink": true, "web": true}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	ready := make(chan struct{})
	start = time.Now()
	go func() { done <- runRoles(rctx, cfg, roles, log, ready) }()
	var ingested, alerted, stored time.Duration
	var alerts float64
	var lastReport time.Time
	for stored == 0 {
		select {
		case err := <-done:
			return fmt.Errorf("the roles stopped: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(start) > 15*time.Minute {
			stop()
			<-done
			return errors.New("the system did not store the backlog in 15 minutes")
		}
		m, err := scrape(ctx, "http://"+addr+"/metrics")
		if err != nil {
			continue // not serving yet
		}
		if time.Since(lastReport) >= 2*time.Second {
			lastReport = time.Now()
			fmt.Fprintf(stdout, "  %5.1fs: ingested %.0f, rules input lag %.0f, rows written %.0f\n", time.Since(start).Seconds(),
				m.sum("citywatch_ingest_events_total", nil), m.sum("citywatch_rules_input_lag_messages", nil), m.sum("citywatch_sink_rows_written_total", nil))
		}
		if ingested == 0 && m.sum("citywatch_ingest_events_total", nil)+m.sum("citywatch_ingest_rejected_total", nil) >= float64(n) {
			ingested = time.Since(start)
		}
		if ingested > 0 && alerted == 0 && m.sum("citywatch_rules_input_lag_messages", nil) == 0 {
			alerted = time.Since(start)
			alerts = m.sum("citywatch_rules_alerts_total", nil)
		}
		if c, err := distinctEvents(ctx, db); err == nil && c >= uint64(n)-uint64(m.sum("citywatch_ingest_rejected_total", nil)) && alerted > 0 {
			stored = time.Since(start)
		}
	}
	stop()
	if err := <-done; err != nil {
		return err
	}
	fmt.Fprintf(stdout, "citywatch, every role (ingest, rules, dispatch, sink, web) in one process on the backlog:\n")
	fmt.Fprintf(stdout, "  ingested (validated, pseudonymised, written):   %8.0f events/s (%v)\n", float64(n)/ingested.Seconds(), ingested.Round(time.Millisecond))
	fmt.Fprintf(stdout, "  evaluated by the whole rule pack (input lag 0): %8.0f events/s (%v), %.0f alert messages\n", float64(n)/alerted.Seconds(), alerted.Round(time.Millisecond), alerts)
	fmt.Fprintf(stdout, "  stored in ClickHouse, each once:                %8.0f events/s (%v)\n", float64(n)/stored.Seconds(), stored.Round(time.Millisecond))
	fmt.Fprintf(stdout, "  stored rate ÷ the slower limit: %.2f\n", limit/stored.Seconds())
	return nil
}

// plainInsert writes the events to a table of five columns with
// clickhouse-go's own batch API and returns the time it took, decoding
// not included.
func plainInsert(ctx context.Context, db *store.DB, values [][]byte) (time.Duration, error) {
	table := "`" + db.Database() + "`.loadtest_plain"
	conn := db.Conn()
	if err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+table+" (id String, type String, device_id String, time DateTime, body String) ENGINE = MergeTree() PARTITION BY toYYYYMMDD(time) ORDER BY (type, time)"); err != nil {
		return 0, fmt.Errorf("cannot create the plain table: %w", err)
	}
	type row struct {
		id, typ, dev string
		t            time.Time
		body         string
	}
	rows := make([]row, 0, len(values))
	var dec event.Decoder
	var e event.Event
	for _, v := range values {
		if dec.Decode(v, &e) != nil {
			continue // the mix holds some invalid messages on purpose
		}
		rows = append(rows, row{e.ID, e.Type.String(), e.DeviceID, e.Time, string(v)})
	}
	start := time.Now()
	for i := 0; i < len(rows); i += 10_000 {
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+table+" (id, type, device_id, time, body)")
		if err != nil {
			return 0, fmt.Errorf("cannot prepare a plain batch: %w", err)
		}
		for _, r := range rows[i:min(i+10_000, len(rows))] {
			if err := b.Append(r.id, r.typ, r.dev, r.t, r.body); err != nil {
				return 0, fmt.Errorf("cannot append to a plain batch: %w", err)
			}
		}
		if err := b.Send(); err != nil {
			return 0, fmt.Errorf("cannot send a plain batch: %w", err)
		}
	}
	took := time.Since(start)
	// Gone before the system's run, so that its merges do not compete.
	if err := conn.Exec(ctx, "DROP TABLE "+table); err != nil {
		return 0, fmt.Errorf("cannot drop the plain table: %w", err)
	}
	return took, nil
}

// metrics is one scrape of a /metrics page.
type metrics map[string]*dto.MetricFamily

func scrape(ctx context.Context, url string) (metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// sum adds up the series of a counter or gauge whose labels include
// every pair of match.
func (m metrics) sum(name string, match map[string]string) float64 {
	mf := m[name]
	if mf == nil {
		return 0
	}
	var s float64
	for _, x := range mf.GetMetric() {
		ok := true
		for k, v := range match {
			found := false
			for _, l := range x.GetLabel() {
				found = found || (l.GetName() == k && l.GetValue() == v)
			}
			ok = ok && found
		}
		if ok {
			s += x.GetCounter().GetValue() + x.GetGauge().GetValue()
		}
	}
	return s
}
