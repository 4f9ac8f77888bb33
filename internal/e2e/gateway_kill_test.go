package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/internal/kafkaio/kafkatest"
	"citywatch/simulators"
)

const (
	// gatewayKills is how often TestGatewayKillLosesNothingAcknowledged
	// kills the gateway; gatewayKillClients the GA/T 1400 platforms
	// pushing meanwhile, gatewayKillBatch the records of one request.
	gatewayKills       = 3
	gatewayKillClients = 4
	gatewayKillBatch   = 20
	// gatewayKillWithin bounds each wait of the test (the gateway's start,
	// a phase's acknowledgements); generous because make test runs every
	// package at once with -race on two cores.
	gatewayKillWithin = 90 * time.Second
)

// gatewayKillConfig is the gateway's configuration file: the HTTP
// address fixed, so that the platforms find every restart where the
// killed gateway was, and RTP on a port of its own (nothing is sent).
const gatewayKillConfig = `log_level: info
gateway:
  http_addr: %q
  rtp:
    addr: "127.0.0.1:0"
    sockets: 1
`

// TestGatewayKillLosesNothingAcknowledged is the crash version of the
// gateway's TestRestartLosesNothingAcknowledged: `citywatch gateway` runs
// as a process against an in-process broker while GA/T 1400 platforms
// push checkpoint passes of the city's checkpoints continuously, each
// record with an id of its own. The gateway is killed with SIGKILL
// gatewayKills times, each after a random number of further
// acknowledgements, and started again on the same address. A request
// that fails (refused or reset while the gateway is down, 503, a record
// answered with a non-zero StatusCode) is sent again with the same ids.
// At the end every record acknowledged with StatusCode 0 must be on
// citywatch.checkpoint as event viid-mv-<MotorVehicleID>; resends may
// put an id there twice.
func TestGatewayKillLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("builds citywatch and kills its gateway process under load")
	}
	ctx := t.Context()
	kc := kafkatest.Broker(t, 4)
	bin := crashBuild(t, false)
	seed := uint64(time.Now().UnixNano())
	t.Logf("gateway kill seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x9a7e))

	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, gatewayKillConfig, addr), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := &crashRole{name: "gateway", bin: bin, args: []string{"gateway"}, logPath: filepath.Join(dir, "gateway.log"), env: crashEnv(map[string]string{
		"CITYWATCH_KAFKA_BROKERS":   strings.Join(kc.Brokers, ","),
		"CITYWATCH_CONFIG":          cfgPath,
		"CITYWATCH_ALLOW_PLAINTEXT": "true",
	})}
	t.Cleanup(gw.stop) // before the broker closes (cleanups run last first)
	defer func() {
		if t.Failed() {
			t.Logf("last lines of the gateway log:\n%s", gw.logTail(40))
		}
	}()
	probe := &http.Client{Transport: &http.Transport{}, Timeout: 2 * time.Second}
	defer probe.CloseIdleConnections()
	gatewayKillStart(t, gw, probe, addr)

	c, err := city.Default()
	if err != nil {
		t.Fatal(err)
	}
	kks := c.DevicesOf(city.KindCheckpoint)
	acked := &gatewayKillAcks{ids: map[string]bool{}}
	pushCtx, stopPush := context.WithCancel(ctx)
	var push sync.WaitGroup
	for w := range gatewayKillClients {
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		cl := simulators.NewVIIDClient("http://"+addr, gatewayKillBatch)
		cl.HTTP = &http.Client{Transport: tr, Timeout: 30 * time.Second}
		push.Go(func() { gatewayKillPush(pushCtx, cl, w, kks, acked) })
	}
	stopped := false
	stopClients := func() {
		if !stopped {
			stopped = true
			stopPush()
			push.Wait()
		}
	}
	defer stopClients()

	// Each kill after a random number of further acknowledgements, the
	// gateway down for a random moment; after the last restart the
	// platforms must be acknowledged again before they stop.
	for k := range gatewayKills + 1 {
		want := acked.count() + 300 + rng.IntN(600)
		gatewayKillWait(t, gw, acked, want)
		if k == gatewayKills {
			break
		}
		gw.kill()
		t.Logf("kill %d: gateway killed with %d records acknowledged", k+1, acked.count())
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(time.Duration(rng.IntN(300)) * time.Millisecond):
		}
		gatewayKillStart(t, gw, probe, addr)
	}
	stopClients()
	// A graceful stop writes out the buffer; what the test checks was
	// written before it was acknowledged.
	p := gw.proc
	gw.stop()
	if p.err != nil {
		t.Errorf("the last gateway did not stop cleanly on SIGTERM: %v", p.err)
	}

	onTopic := map[string]bool{}
	var d event.Decoder
	for _, m := range readTopic(ctx, t, kc, kc.Topic(kafkaio.TopicCheckpoint)) {
		var e event.Event
		if err := d.Decode(m.Value, &e); err != nil {
			t.Fatalf("cannot decode a message of %s: %v: %s", kc.Topic(kafkaio.TopicCheckpoint), err, m.Value)
		}
		onTopic[e.ID] = true
	}
	var missing []string
	for id := range acked.ids {
		if !onTopic["viid-mv-"+id] {
			missing = append(missing, id)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("%d of %d acknowledged records are not on %s (%d distinct events there), first: %s",
			len(missing), len(acked.ids), kc.Topic(kafkaio.TopicCheckpoint), len(onTopic), strings.Join(crashFirst(missing, 10), ", "))
	}
	t.Logf("%d records acknowledged across %d kills, %d distinct events on %s, %d requests failed and were resent",
		len(acked.ids), gw.kills, len(onTopic), kc.Topic(kafkaio.TopicCheckpoint), acked.failures())
}

// gatewayKillAcks is what the platforms learnt from the gateways'
// answers.
type gatewayKillAcks struct {
	mu     sync.Mutex
	ids    map[string]bool // MotorVehicleIDs answered StatusCode 0
	failed int             // requests that failed or records refused
}

func (a *gatewayKillAcks) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ids)
}

func (a *gatewayKillAcks) failures() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.failed
}

// gatewayKillPush is one platform: it pushes a new record of the next
// checkpoint at a time until ctx ends, first those the gateway refused
// (same id), and keeps a failed batch to send again with the next record.
func gatewayKillPush(ctx context.Context, cl *simulators.VIIDClient, w int, kks []*city.Device, acked *gatewayKillAcks) {
	events := map[string]event.Event{} // made and not acknowledged, by id
	var refused []string
	cl.OnStatus = func(id string, code int) {
		if code != 0 {
			if _, ok := events[id]; ok {
				refused = append(refused, id)
			}
			acked.mu.Lock()
			acked.failed++
			acked.mu.Unlock()
			return
		}
		delete(events, id)
		acked.mu.Lock()
		acked.ids[id] = true
		acked.mu.Unlock()
	}
	for i := 0; ctx.Err() == nil; {
		var e event.Event
		if len(refused) > 0 {
			e, refused = events[refused[0]], refused[1:]
		} else {
			id := fmt.Sprintf("kill-w%d-%06d", w, i)
			e = event.Event{ID: id, Type: event.TypeCheckpointPass, DeviceID: kks[(w*7+i)%len(kks)].ID, Time: time.Now(),
				Lane: 1 + i%4, Plate: fmt.Sprintf("鄂F%05d", i), PlateColor: "blue", VehicleType: "car", SpeedKmh: 50, Confidence: 0.95}
			events[id] = e
			i++
		}
		if err := cl.Add(ctx, &e); err != nil && ctx.Err() == nil {
			// The gateway is down or starting: the batch stays in the
			// client and goes again with the next record.
			acked.mu.Lock()
			acked.failed++
			acked.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// gatewayKillStart starts the gateway process and waits until its
// /healthz answers.
func gatewayKillStart(t *testing.T, gw *crashRole, probe *http.Client, addr string) {
	t.Helper()
	if err := gw.start(); err != nil {
		t.Fatal(err)
	}

	healthy := func() bool {
		resp, err := probe.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	gatewayKillPoll(t, gw, fmt.Sprintf("start %d of the gateway: /healthz on %s did not answer 200", gw.starts, addr), healthy)
}

// gatewayKillWait waits until want records are acknowledged.
func gatewayKillWait(t *testing.T, gw *crashRole, acked *gatewayKillAcks, want int) {
	t.Helper()
	gatewayKillPoll(t, gw, fmt.Sprintf("fewer than %d records acknowledged (after %d kills)", want, gw.kills),
		func() bool { return acked.count() >= want })
}

// gatewayKillPoll polls cond until it holds, failing with what if it
// does not within gatewayKillWithin or the gateway exits on its own.
func gatewayKillPoll(t *testing.T, gw *crashRole, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(gatewayKillWithin)
	for !cond() {
		if gw.exited() {
			t.Fatalf("%s: the gateway exited on its own: %s", what, gw.exits[len(gw.exits)-1])
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("%s: %v", what, t.Context().Err())
		case <-deadline:
			t.Fatalf("%s within %s", what, gatewayKillWithin)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
