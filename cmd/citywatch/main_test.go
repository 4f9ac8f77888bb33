package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"citywatch/internal/chtest"
	"citywatch/internal/kafkaio"
	"citywatch/simulators"
)

func TestHelpListsEveryContractCommand(t *testing.T) {
	var out bytes.Buffer
	if code := realMain([]string{"help"}, &out, io.Discard); code != 0 {
		t.Fatalf("help exited %d", code)
	}
	for _, c := range []string{"demo", "run", "gateway", "sim", "migrate", "rules"} {
		if !strings.Contains(out.String(), "citywatch "+c) {
			t.Errorf("help does not list %q:\n%s", c, out.String())
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	var errOut bytes.Buffer
	if code := realMain([]string{"frobnicate"}, io.Discard, &errOut); code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	if !strings.Contains(errOut.String(), `unknown command "frobnicate"`) {
		t.Errorf("stderr %q does not name the command", errOut.String())
	}
}

func TestParseRoles(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{"ingest,sink,web", ""},
		{"ingest,rules,sink,web", ""},
		{"ingest, sink", ""},
		{"", "name at least one role"},
		{"ingest,frob", `unknown role "frob"`},
	}
	for _, tt := range tests {
		_, err := parseRoles(tt.in)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("parseRoles(%q) = %v, want error containing %q", tt.in, err, tt.wantErr)
		}
	}
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("kafka:\n  partitions: 16\ningest:\n  workers: 3\nsink:\n  max_wait: 500ms\nclickhouse:\n  retention:\n    fuel: 3\n"), 0o600)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("ingest:\n  wrokers: 3\n"), 0o600)
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, nil, 0o600)

	c, err := loadConfig(env(map[string]string{
		"CITYWATCH_CONFIG":          good,
		"CITYWATCH_KAFKA_BROKERS":   "k1:9092, k2:9092",
		"CITYWATCH_CLICKHOUSE_ADDR": "ch:9000",
		"CITYWATCH_CLICKHOUSE_DB":   "cw",
		"CITYWATCH_TOPIC_PREFIX":    "x.",
		"CITYWATCH_PSEUDONYM_KEY":   "0123456789abcdef!",
		"CITYWATCH_HTTP_ADDR":       ":9999",
		"CITYWATCH_ALLOW_PLAINTEXT": "true", // k1, k2 and ch are not loopback
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Kafka.Partitions != 16 || c.Ingest.Workers != 3 || c.Sink.MaxWait != 500*time.Millisecond || c.ClickHouse.Retention.Fuel != 3 {
		t.Errorf("file values not applied: %+v", c)
	}
	if strings.Join(c.Kafka.Brokers, ",") != "k1:9092,k2:9092" || c.ClickHouse.Addr[0] != "ch:9000" || c.ClickHouse.Database != "cw" ||
		c.Kafka.TopicPrefix != "x." || string(c.PseudonymKey) != "0123456789abcdef!" || c.HTTP.Addr != ":9999" {
		t.Errorf("environment not applied: %+v", c)
	}
	if c.ClickHouse.Retention.Events != 90 || c.Sink.BatchRows != 10_000 || c.Timezone != "Asia/Shanghai" {
		t.Errorf("defaults not applied: %+v", c)
	}
	if err := c.validate(map[string]bool{"ingest": true, "sink": true, "web": true}, true); err != nil {
		t.Errorf("valid config rejected: %v", err)
	}

	if _, err := loadConfig(env(map[string]string{"CITYWATCH_CONFIG": bad})); err == nil || !strings.Contains(err.Error(), "wrokers") {
		t.Errorf("unknown field: err = %v, want it named", err)
	}
	if _, err := loadConfig(env(map[string]string{"CITYWATCH_CONFIG": empty})); err != nil {
		t.Errorf("empty file: %v", err)
	}
	c, _ = loadConfig(env(nil))
	if err := c.validate(map[string]bool{"ingest": true}, true); err == nil || !strings.Contains(err.Error(), "CITYWATCH_KAFKA_BROKERS") {
		t.Errorf("no brokers: err = %v, want CITYWATCH_KAFKA_BROKERS named", err)
	}
	c.Kafka.Brokers = []string{"k:9092"}
	if err := c.validate(map[string]bool{"ingest": true}, true); err == nil || !strings.Contains(err.Error(), "CITYWATCH_PSEUDONYM_KEY") {
		t.Errorf("no key: err = %v, want CITYWATCH_PSEUDONYM_KEY named", err)
	}
	if c.Runtime.MemoryLimit != "auto" || c.Runtime.GCPercent != "400" {
		t.Errorf("runtime defaults: %+v", c.Runtime)
	}
	c.Runtime.GCPercent = "always"
	if err := c.validate(map[string]bool{}, true); err == nil || !strings.Contains(err.Error(), "runtime.gc_percent") {
		t.Errorf("bad gc_percent: err = %v, want runtime.gc_percent named", err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestRunRoles wires ingest, rules, sink and web as `citywatch run` does, against
// an in-process broker and the real ClickHouse, and checks the metrics the
// foundation promises.
func TestRunRoles(t *testing.T) {
	chCfg := chtest.Config(t)
	cfg, err := loadConfig(env(map[string]string{"CITYWATCH_PSEUDONYM_KEY": "test-key-0123456789"}))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ClickHouse = chCfg
	cfg.HTTP.Addr = freeAddr(t)
	cfg.Sink.MaxWait = 100 * time.Millisecond
	broker, err := kafkaio.StartEmbedded(cfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	cfg.Kafka.Brokers = broker.Brokers()
	roles := map[string]bool{"ingest": true, "rules": true, "sink": true, "web": true}
	if err := cfg.validate(roles, true); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- runRoles(ctx, cfg, roles, slog.New(slog.NewTextHandler(io.Discard, nil)), ready) }()
	<-ready

	w := cfg.Kafka.NewWriter()
	defer w.Close()
	g := simulators.NewGenerator(simulators.GeneratorConfig{Seed: 9, BadShare: 0.1})
	pctx, stop := context.WithTimeout(ctx, time.Second)
	if err := simulators.Publish(pctx, g, w, cfg.Kafka.TopicPrefix, 2000); err != nil {
		t.Fatal(err)
	}
	stop()

	base := "http://" + cfg.HTTP.Addr
	want := []string{
		"citywatch_kafka_consumed_messages_total",
		"citywatch_ingest_events_total",
		"citywatch_ingest_rejected_total",
		"citywatch_kafka_produced_messages_total",
		"citywatch_kafka_consumer_lag_messages",
		"citywatch_kafka_batch_messages",
		"citywatch_sink_insert_seconds",
		"citywatch_sink_rows_written_total",
		"citywatch_rules_watermark_seconds",
		"citywatch_rules_replayed_events_total",
		"go_gc_gogc_percent",
		"go_gc_gomemlimit_bytes",
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, body := get(t, base+"/metrics")
		var missing []string
		for _, m := range want {
			if !strings.Contains(body, m+"{") && !strings.Contains(body, m+" ") && !strings.Contains(body, m+"_count") {
				missing = append(missing, m)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics missing after 30 s: %v", missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Ready once the rules have restored their state.
	for {
		code, body := get(t, base+"/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body := get(t, base+"/"); code != http.StatusOK || !strings.Contains(body, "ingest") {
		t.Errorf("/ = %d %s", code, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("runRoles: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("runRoles did not stop within a minute")
	}
}

// TestExampleConfig keeps deploy/citywatch.example.yaml loadable and equal
// to the defaults it documents.
func TestExampleConfig(t *testing.T) {
	got, err := loadConfig(env(map[string]string{"CITYWATCH_CONFIG": filepath.Join("..", "..", "deploy", "citywatch.example.yaml")}))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := loadConfig(env(nil))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("example config differs from the defaults (-defaults +example):\n%s", diff)
	}
}

// TestRunRolesWithoutWebServesProbes runs ingest alone: the process still
// serves /metrics, /healthz and /readyz for Prometheus and the
// orchestrator, and nothing else.
func TestRunRolesWithoutWebServesProbes(t *testing.T) {
	cfg, err := loadConfig(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTP.Addr = freeAddr(t)
	cfg.PseudonymKey = []byte("test-key-0123456789")
	broker, err := kafkaio.StartEmbedded(cfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	cfg.Kafka.Brokers = broker.Brokers()
	roles := map[string]bool{"ingest": true}
	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- runRoles(ctx, cfg, roles, slog.New(slog.NewTextHandler(io.Discard, nil)), ready) }()
	<-ready
	base := "http://" + cfg.HTTP.Addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(base + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(b), "citywatch_ingest_") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no /metrics with ingest metrics within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, base+path); code != http.StatusOK {
			t.Errorf("%s = %d %s", path, code, body)
		}
	}
	if code, _ := get(t, base+"/api/alerts"); code == http.StatusOK {
		t.Errorf("/api/alerts answered in a process without the web role")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("runRoles: %v", err)
	}
}
