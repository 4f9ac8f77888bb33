package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"golang.org/x/crypto/bcrypt"

	"citywatch/event"
	"citywatch/internal/browsertest"
	"citywatch/internal/chtest"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/rules"
	"citywatch/simulators"
	"citywatch/web"
)

var (
	browserProbes = flag.Int("browser.probes", 20, "probe events of TestEventToBrowser")
	browserRate   = flag.Int("browser.rate", 500, "city events/s offered beside the probes in TestEventToBrowser")
)

// TestEventToBrowser measures the whole path an operator depends on: a
// camera's fight detection produced to its raw topic, ingest, the rules
// role with the default pack, citywatch.alerts, the web role's live feed,
// and the row in the console of a logged-in operator in headless
// chromium, with city traffic offered beside it. The page records the
// moment each row enters the document; the test prints p50 and p99 of
// produced → visible. `make bench` runs it at the city's peak rate.
func TestEventToBrowser(t *testing.T) {
	browsertest.Path(t)
	ctx := t.Context()
	c, err := city.Default()
	if err != nil {
		t.Fatal(err)
	}
	p := newPipeline(t, chtest.Config(t))
	db := p.openDB(ctx)
	if err := kafkaio.EnsureTopics(ctx, p.kc, kafkaio.AllTopics...); err != nil {
		t.Fatal(err)
	}
	pseud, err := event.NewPseudonymizer(p.key)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	stops := []func() error{p.start(ctx, "ingest", p.newIngest(reg).Run)}
	rr, err := rules.NewRole(rules.RoleConfig{}, rules.CityConfig(c), p.kc, pseud, nil, reg, p.km, p.log)
	if err != nil {
		t.Fatal(err)
	}
	stops = append(stops, p.start(ctx, "rules", rr.Run))

	hash, err := bcrypt.GenerateFromPassword([]byte("pw-op"), 10)
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users.yaml")
	if err := web.WriteUsers(users, []web.User{{Name: "op", Role: web.RoleOperator, PasswordHash: string(hash)}}); err != nil {
		t.Fatal(err)
	}
	srv, err := web.NewApp(web.Config{Addr: "127.0.0.1:0", UsersFile: users}, web.Deps{
		Log: p.log, Kafka: &p.kc, Store: db, Location: city.Location, Roles: []string{"web"},
		Registerer: reg, Gatherer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stops = append(stops, p.start(ctx, "web", func(ctx context.Context) error { return srv.Serve(ctx, ln) }))
	defer func() {
		for _, stop := range slices.Backward(stops) {
			if err := stop(); err != nil {
				t.Errorf("stop: %v", err)
			}
		}
	}()

	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	op := browsertest.Session(t, browsertest.Start(t, bctx))
	browsertest.Login(t, op, "http://"+ln.Addr().String(), "op", "pw-op")
	// The page notes when each alert's row enters the document.
	if err := chromedp.Do(op, chromedp.WaitVisible("#alerts"), chromedp.Evaluate[chromedp.Void](`
		window.seenAt = {};
		const note = (n, now) => { if (n.dataset && n.dataset.id && !(n.dataset.id in window.seenAt)) window.seenAt[n.dataset.id] = now; };
		new MutationObserver(ms => { const now = Date.now(); for (const m of ms) for (const n of m.addedNodes) {
			note(n, now); if (n.querySelectorAll) for (const d of n.querySelectorAll("[data-id]")) note(d, now); } })
			.observe(document.querySelector("#alerts"), {childList: true, subtree: true});`)); err != nil {
		t.Fatalf("console: %v", err)
	}

	// The alerts topic tells which alert each probe raised.
	alertOf := map[string]string{} // probe event id → alert id
	var mu sync.Mutex
	fctx, stopFollow := context.WithCancel(ctx)
	var wg sync.WaitGroup
	inbox := make(chan func(), 1024)
	follow(fctx, &wg, p.kc, kafkaio.TopicAlerts, inbox, func(v []byte) func() {
		a, err := event.DecodeAlert(v)
		if err != nil || a.Rule != "camera.violence" || len(a.Evidence) == 0 {
			return nil
		}
		return func() {
			mu.Lock()
			alertOf[a.Evidence[len(a.Evidence)-1]] = a.ID
			mu.Unlock()
		}
	})
	defer func() { stopFollow(); wg.Wait() }()

	// City traffic beside the probes.
	lctx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan error, 1)
	go func() { loadDone <- browserLoad(lctx, p, *browserRate) }()

	probe := func(id string) time.Time {
		dev := "cam-" + id
		now := time.Now()
		v := fmt.Appendf(nil, `{"id":%q,"type":"camera.detection","device_id":%q,"time":%q,"lat":32.0421,"lon":112.1442,"camera_class":"A","object":"person","behavior":"fight","confidence":0.95}`,
			id, dev, now.Format(time.RFC3339Nano))
		if err := p.writer.WriteMessages(ctx, kafka.Message{Topic: p.kc.Topic(kafkaio.TopicCamera), Key: []byte(dev), Value: v}); err != nil {
			t.Fatal(err)
		}
		return now
	}
	// latencies waits until every probe's row is in the page and returns
	// produced → visible for each.
	latencies := func(sentAt map[string]time.Time) []time.Duration {
		var lat []time.Duration
		deadline := time.Now().Add(2 * time.Minute)
		for {
			for drained := false; !drained; {
				select {
				case f := <-inbox:
					f()
				default:
					drained = true
				}
			}
			seen, err := chromedp.Run(op, chromedp.Evaluate[map[string]float64](`window.seenAt`))
			if err != nil {
				t.Fatal(err)
			}
			lat = lat[:0]
			mu.Lock()
			for id, at := range sentAt {
				if ms, ok := seen[alertOf[id]]; ok {
					lat = append(lat, time.UnixMilli(int64(ms)).Sub(at))
				}
			}
			mu.Unlock()
			if len(lat) == len(sentAt) {
				return lat
			}
			if time.Now().After(deadline) {
				mu.Lock()
				raised := 0
				missing := []string{} // alert ids raised but not seen
				for id := range sentAt {
					if alertOf[id] != "" {
						raised++
						if _, ok := seen[alertOf[id]]; !ok {
							missing = append(missing, alertOf[id])
						}
					}
				}
				mu.Unlock()
				t.Fatalf("%d of %d probe alerts reached the console in 2 minutes (%d raised on %s); %s",
					len(lat), len(sentAt), raised, kafkaio.TopicAlerts, consoleState(op, missing))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// One probe first, so that every role has started and caught up.
	latencies(map[string]time.Time{"bprobe-warm": probe("bprobe-warm")})

	sentAt := map[string]time.Time{}
	for i := range *browserProbes {
		id := "bprobe-" + strconv.Itoa(i)
		sentAt[id] = probe(id)
		time.Sleep(250 * time.Millisecond)
	}
	lat := latencies(sentAt)
	stopLoad()
	if err := <-loadDone; err != nil {
		t.Fatal(err)
	}
	slices.Sort(lat)
	t.Logf("event produced → alert visible in the browser, ingest + rules + web + chromium, %d city events/s beside: p50 %v, p99 %v, max %v (n=%d)",
		*browserRate, lat[len(lat)/2], lat[min(len(lat)*99/100, len(lat)-1)], lat[len(lat)-1], len(lat))
}

// browserLoad offers rate events/s of the city mix until ctx ends.
func browserLoad(ctx context.Context, p *pipeline, rate int) error {
	if rate <= 0 {
		return nil
	}
	w := p.kc.NewWriter()
	defer w.Close()
	load := simulators.NewLoad(11, p.kc.TopicPrefix, "bl")
	var msgs []kafka.Message
	var arena []byte
	start, sent := time.Now(), 0
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		k := int(float64(rate)*time.Since(start).Seconds()) - sent
		if k <= 0 {
			continue
		}
		msgs, arena = load.Append(msgs[:0], arena[:0], time.Now(), k)
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("cannot produce city traffic: %w", err)
		}
		sent += k
	}
}

// consoleState says, for a failure, where the alerts ids stand: in the
// web role's list, in the page's rows, and how many feed frames the web
// role dropped for slow clients (each followed by a resync).
func consoleState(op context.Context, ids []string) string {
	state, err := chromedp.Run(op, chromedp.Evaluate[map[string]any](`(async (ids) => {
		const list = await (await fetch("/api/alerts?limit=500")).json();
		const have = new Set(list.alerts.map((a) => a.id));
		const m = await (await fetch("/metrics")).text();
		return {missing: ids, in_list: ids.filter((id) => have.has(id)),
			in_page: ids.filter((id) => document.querySelector('tr[data-id="' + CSS.escape(id) + '"]') !== null),
			feed_dropped: (m.match(/^citywatch_web_feed_dropped_total (\S+)/m) || [])[1] || "none"};
	})(`+jsonString(ids)+`)`, chromedp.EvalAwaitPromise))
	if err != nil {
		return fmt.Sprintf("the console's state is unknown: %v", err)
	}
	return fmt.Sprintf("console: %v", state)
}

// jsonString returns v as JSON, for a script.
func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return "null"
	}
	return string(b)
}
