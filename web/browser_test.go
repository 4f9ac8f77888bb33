package web

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/browsertest"
	"citywatch/internal/kafkaio"
	"citywatch/store"
)

// TestBrowser drives the console, the patrol page and the trends page in
// headless chromium against a live web role on a kfake broker and
// ClickHouse.
func TestBrowser(t *testing.T) {
	e := newEnv(t)
	now := time.Now().UTC().Truncate(time.Millisecond)

	// Some history for the trends charts (the sink's tables).
	var ar store.AlertRows
	for i := range 12 {
		a := testAlert(fmt.Sprintf("h%d", i), []string{"camera.violence", "crowd.gathering", "vehicle.hotlist"}[i%3], event.SeverityHigh, now.Add(-time.Duration(i)*time.Hour))
		if err := ar.AddAlert(a.AppendJSON(nil), now); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.db.InsertAlerts(t.Context(), &ar); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	base := browsertest.Start(t, ctx)

	origin, _ := url.Parse(e.url)
	var mu sync.Mutex
	var foreign []string
	// troubles are what the pages met that a failure should tell: answers
	// of 400 and above, dialogs (the pages alert() a failed action),
	// uncaught exceptions.
	var troubles []string
	trouble := func(format string, args ...any) {
		mu.Lock()
		troubles = append(troubles, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	watch := func(c context.Context) {
		if err := chromedp.Listen(c, func(ev any) {
			switch ev := ev.(type) {
			case *network.EventRequestWillBeSent:
				if ev.Request.Method == "POST" {
					trouble("POST %s at %s", ev.Request.URL, time.Now().Format("15:04:05.000"))
				}
				u, err := url.Parse(ev.Request.URL)
				if err != nil || (u.Host != origin.Host && u.Scheme != "data") {
					mu.Lock()
					foreign = append(foreign, ev.Request.URL)
					mu.Unlock()
				}
			case *network.EventResponseReceived:
				if ev.Response.Status >= 400 || strings.Contains(ev.Response.URL, "/api/patrol/status") {
					trouble("%s answered %d", ev.Response.URL, ev.Response.Status)
				}
			case *page.EventJavascriptDialogOpening:
				trouble("dialog %q on %s", ev.Message, ev.URL)
			case *runtime.EventExceptionThrown:
				trouble("exception %s", ev.ExceptionDetails.Text)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("what the pages met: %q", troubles)
			mu.Unlock()
		}
	}()
	newSession := func(name string) context.Context {
		c := browsertest.Session(t, base)
		watch(c)
		browsertest.Login(t, c, e.url, name, "pw-"+name)
		return c
	}
	shot := func(c context.Context, name string) {
		png, err := chromedp.Run(c, chromedp.FullScreenshot(100))
		if err != nil {
			t.Errorf("screenshot %s: %v", name, err)
			return
		}
		dir := filepath.Join("..", ".run", "screenshots")
		if err := os.MkdirAll(dir, 0o755); err == nil {
			os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644)
		}
	}

	// The operator logs in and sees a published alert appear in the feed.
	op := newSession("op")
	if err := chromedp.Do(op, chromedp.WaitVisible("#alerts"), chromedp.Poll[chromedp.Void](`document.querySelector(".leaflet-overlay-pane canvas") !== null`)); err != nil {
		t.Fatalf("console: %v", err)
	}
	a := testAlert("b1", "camera.violence", event.SeverityCritical, now)
	e.publishAlert(a)
	if err := chromedp.Do(op, chromedp.WaitVisible(`tr[data-id="b1"]`)); err != nil {
		t.Fatalf("alert b1 not shown: %v", err)
	}
	// Acknowledge it from the detail.
	if err := chromedp.Do(op,
		chromedp.Click(`tr[data-id="b1"]`),
		chromedp.WaitVisible("#btn-ack"),
		chromedp.Click("#btn-ack"),
		chromedp.Poll[chromedp.Void](`document.querySelector('tr[data-id="b1"] .status').textContent.includes("已确认")`),
	); err != nil {
		t.Fatalf("ack: %v", err)
	}

	// The patrol user sees the dispatch and accepts it.
	pat := newSession("pat")
	e.publishDispatch(event.Dispatch{ID: "db1", AlertID: "b1", UnitID: "unit-001", Status: event.DispatchAssigned, Time: now, ETASeconds: 50, DistanceM: 600, CircleID: "circle-01", TierMinutes: 1})
	// The connection banner, shown when a refresh fails, does not move
	// the buttons under the officer's finger.
	if err := chromedp.Do(pat, chromedp.WaitEnabled("#b-accepted")); err != nil {
		t.Fatalf("patrol dispatch: %v", err)
	}
	moved, err := chromedp.Run(pat, chromedp.Evaluate[bool](`(() => {
		const b = document.getElementById("b-accepted"), banner = document.getElementById("banner");
		const before = b.getBoundingClientRect().top;
		banner.classList.add("show");
		const after = b.getBoundingClientRect().top;
		banner.classList.remove("show");
		return before !== after;
	})()`))
	if err != nil || moved {
		t.Fatalf("the banner moved the patrol buttons: %v, %v", moved, err)
	}
	if err := chromedp.Do(pat, chromedp.Click("#b-accepted")); err != nil {
		t.Fatalf("patrol accept: %v", err)
	}
	m := readTopic(t, e.kc, kafkaio.TopicPatrol, func(m kafka.Message) bool { return strings.Contains(string(m.Value), `"dispatch_id":"db1"`) })
	var dec event.Decoder
	var pe event.Event
	if err := dec.Decode(m.Value, &pe); err != nil || pe.Type != event.TypePatrolStatus || pe.Status != "accepted" || pe.DeviceID != "unit-001" {
		t.Fatalf("patrol.status = %s (%v)", m.Value, err)
	}
	shot(pat, "patrol")
	// The dispatcher records the answer; the console shows it.
	e.publishDispatch(event.Dispatch{ID: "db1", AlertID: "b1", UnitID: "unit-001", Status: event.DispatchAccepted, Time: now.Add(time.Second), CircleID: "circle-01", TierMinutes: 1})
	if err := chromedp.Do(op, chromedp.Poll[chromedp.Void](`document.querySelector('tr[data-id="b1"] .status').textContent.includes("unit-001 已接受")`)); err != nil {
		t.Fatalf("console does not show accepted: %v", err)
	}

	// Latency: alert produced → row in the page, over a few dozen alerts.
	var lat []time.Duration
	for i := range 30 {
		id := fmt.Sprintf("lat%d", i)
		start := time.Now()
		e.publishAlert(testAlert(id, "crowd.gathering", event.SeverityMedium, time.Now().UTC()))
		if err := chromedp.Do(op, chromedp.Poll[chromedp.Void](`document.querySelector('tr[data-id="`+id+`"]') !== null`, chromedp.WithPollingInterval(2*time.Millisecond))); err != nil {
			t.Fatalf("alert %s: %v", id, err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	t.Logf("alert produced → visible in the browser: p50 %v, p99 %v (n=%d)", lat[len(lat)/2], lat[len(lat)*99/100], len(lat))
	shot(op, "console")

	// The analyst's trends page renders its charts.
	ana := newSession("ana")
	if err := chromedp.Do(ana, chromedp.WaitVisible(`#c-alerts[data-rendered="1"] .uplot`), chromedp.WaitVisible(`#c-events[data-rendered="1"]`)); err != nil {
		t.Fatalf("trends: %v", err)
	}
	shot(ana, "trends")

	// No page asked any other origin for anything.
	for _, c := range []context.Context{op, pat, ana} {
		res, err := chromedp.Run(c, chromedp.Evaluate[[]string](`performance.getEntriesByType("resource").map(e => e.name)`))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if u, err := url.Parse(r); err != nil || u.Host != origin.Host {
				foreign = append(foreign, r)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(foreign) > 0 {
		t.Errorf("requests to other origins: %v", foreign)
	}
	e.scanPersonal()
}
