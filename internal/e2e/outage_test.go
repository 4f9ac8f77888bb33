package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"citywatch/internal/chtest"
	"citywatch/simulators"
	"citywatch/store"
)

// localServer is a ClickHouse server of the test's own, so that it can be
// stopped without disturbing other tests.
type localServer struct {
	t   *testing.T
	env []string
}

func startLocalServer(t *testing.T) (*localServer, store.Config) {
	t.Helper()
	if _, err := exec.LookPath("clickhouse-server"); err != nil {
		if _, err := os.Stat("/usr/sbin/clickhouse-server"); err != nil {
			if os.Getenv(chtest.EnvRequire) == "1" {
				t.Fatal("clickhouse-server is not installed; `make test` installs it")
			}
			t.Skip("clickhouse-server is not installed; run `make test`")
		}
	}
	tcp, http := freePort(t), freePort(t)
	s := &localServer{t: t, env: append(os.Environ(),
		"CLICKHOUSE_DIR="+t.TempDir(),
		"CLICKHOUSE_TCP_PORT="+strconv.Itoa(tcp),
		"CLICKHOUSE_HTTP_PORT="+strconv.Itoa(http),
	)}
	s.run("start")
	t.Cleanup(func() { s.run("stop") })
	cfg := store.Config{Addr: []string{"127.0.0.1:" + strconv.Itoa(tcp)}, Database: "citywatch_outage"}
	cfg.SetDefaults()
	return s, cfg
}

func (s *localServer) run(verb string) {
	s.t.Helper()
	cmd := exec.Command(filepath.Join("..", "..", "deploy", "clickhouse.sh"), verb)
	cmd.Env = s.env
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("clickhouse.sh %s: %v\n%s", verb, err, out)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += metricValue(m)
		}
	}
	return sum
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

func TestClickHouseOutageUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and stops a ClickHouse server of its own")
	}
	server, chCfg := startLocalServer(t)
	ctx := t.Context()
	p := newPipeline(t, chCfg)
	db := p.openDB(ctx)

	stopIngest := p.start(ctx, "ingest", p.newIngest(p.reg).Run)
	defer stopIngest()
	sinkReg := prometheus.NewRegistry()
	stopSink := p.start(ctx, "sink", p.newSink(db, sinkReg).Run)

	g := simulators.NewGenerator(simulators.GeneratorConfig{Seed: 5, BadShare: 0.02, DupShare: 0.02})
	var all []simulators.Message
	send := func(n int) {
		msgs := make([]simulators.Message, n)
		for i := range msgs {
			msgs[i] = g.Next()
		}
		p.produce(ctx, msgs)
		all = append(all, msgs...)
	}
	send(2000)
	time.Sleep(time.Second)

	server.run("stop")
	ingested := counterValue(t, p.reg, "citywatch_ingest_events_total")
	for range 10 { // about 5 s of load with the database down
		send(2000)
		time.Sleep(500 * time.Millisecond)
	}
	// Ingest goes on while storage is down.
	if after := counterValue(t, p.reg, "citywatch_ingest_events_total"); after <= ingested {
		t.Errorf("ingest stalled during the outage: %v events before, %v after", ingested, after)
	}
	// The sink noticed and is retrying, not dropping.
	deadline := time.Now().Add(30 * time.Second)
	for counterValue(t, sinkReg, "citywatch_sink_insert_errors_total") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sink never failed an insert while ClickHouse was down")
		}
		time.Sleep(200 * time.Millisecond)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapAlloc > 1<<30 {
		t.Errorf("heap grew to %d MiB during the outage", ms.HeapAlloc>>20)
	}

	server.run("start")
	send(2000)
	waitStored(ctx, t, db, expect(all), 3*time.Minute)
	if err := stopSink(); err != nil {
		t.Errorf("sink: %v", err)
	}
	if strings.Contains(p.logs.String(), "panic") {
		t.Error("a panic was logged")
	}
}
