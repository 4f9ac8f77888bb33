package web

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"citywatch/event"
)

// BenchmarkFeed100Clients measures the live feed's capacity: alert
// messages taken by the live view and delivered to 100 connected SSE
// clients. Reported as alerts/s (each delivered to all 100).
func BenchmarkFeed100Clients(b *testing.B) {
	const clients = 100
	s, err := NewApp(Config{ClientBuffer: 4096, FeedBuffer: 100000}, Deps{Log: discardLog()})
	if err != nil {
		b.Fatal(err)
	}
	u := &User{Name: "bench", Role: RoleOperator}
	s.sessions.byID["tok"] = &session{token: "tok", user: u, created: time.Now(), expires: time.Now().Add(time.Hour)}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var got atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/api/feed", nil)
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: "tok"})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "event: alert") {
					got.Add(1)
				}
			}
		})
	}
	for s.hub.clientCount() < clients {
		time.Sleep(time.Millisecond)
	}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		a := testAlert(fmt.Sprintf("x%d", i%5000), "crowd.gathering", event.SeverityMedium, now)
		s.live.addAlert(a)
		// Pace to what the clients take, so that the figure is delivery,
		// not drops (drops are counted and would show as resyncs).
		for int64(i+1)*clients-got.Load() > clients*1000 {
			time.Sleep(50 * time.Microsecond)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for got.Load()+int64(testutil.ToFloat64(s.m.feedDropped)) < int64(b.N)*clients && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "alerts/s")
	b.ReportMetric(testutil.ToFloat64(s.m.feedDropped), "dropped")
	cancel()
	s.hub.close()
	wg.Wait()
}
