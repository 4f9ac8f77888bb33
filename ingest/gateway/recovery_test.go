package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"citywatch/internal/city"
	"citywatch/internal/kafkaio/kafkatest"
)

// flakyWriter is a Kafka cluster that is down while down is set and
// otherwise the real (in-process) one.
type flakyWriter struct {
	down atomic.Bool
	w    Writer
}

func (f *flakyWriter) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	if f.down.Load() {
		return errors.New("kafka down")
	}
	return f.w.WriteMessages(ctx, msgs...)
}

func (f *flakyWriter) Close() error { return f.w.Close() }

// TestKafkaRecovery follows TestKafkaUnavailable's outage to its end:
// while Kafka is down pushes are answered 503 and nothing is
// acknowledged; once it is back, pushes are acknowledged again, and every
// record acknowledged is on the topic.
func TestKafkaRecovery(t *testing.T) {
	kc := kafkatest.Broker(t, 2)
	fw := &flakyWriter{w: kc.NewWriter()}
	fw.down.Store(true)
	cfg := testConfig()
	cfg.BufferSize = 10
	cfg.VIID.AckTimeout = 200 * time.Millisecond
	r := start(t, cfg, kc, fw)
	base := "http://" + r.g.HTTPAddr().String()
	cl := httpClient(t)
	kk := testCity(t).DevicesOf(city.KindCheckpoint)[0]

	// push sends records from..from+n-1 and returns the HTTP status and
	// the ids acknowledged (StatusCode 0).
	push := func(n, from int) (int, []string) {
		resp, err := cl.Post(base+"/VIID/MotorVehicles", "application/json", strings.NewReader(motorVehicles(kk.ID, n, from)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var a struct {
			ResponseStatusListObject struct {
				ResponseStatusObject []struct {
					ID         string `json:"Id"`
					StatusCode int
				}
			}
		}
		if err := json.Unmarshal(body, &a); err != nil {
			t.Fatalf("answer %s: %v", body, err)
		}
		var acked []string
		for _, s := range a.ResponseStatusListObject.ResponseStatusObject {
			if s.StatusCode == 0 {
				acked = append(acked, s.ID)
			}
		}
		return resp.StatusCode, acked
	}

	// The outage: records that fit wait for Kafka and are not
	// acknowledged; more than fit are refused at once.
	for _, p := range []struct{ n, from int }{{6, 0}, {20, 100}} {
		if code, acked := push(p.n, p.from); code != 503 || len(acked) != 0 {
			t.Fatalf("during the outage: HTTP %d, acknowledged %v", code, acked)
		}
	}

	// Kafka is back. The first push is acknowledged once the records
	// queued in the outage are written (the writers retry with backoff);
	// the device resends until then, as on any 503.
	fw.down.Store(false)
	acked := map[string]bool{}
	for {
		code, ids := push(6, 200)
		if code == 200 {
			if len(ids) != 6 {
				t.Fatalf("HTTP 200 with %d of 6 acknowledged", len(ids))
			}
			for _, id := range ids {
				acked[id] = true
			}
			break
		}
		if code != 503 || len(ids) != 0 {
			t.Fatalf("after the outage: HTTP %d, acknowledged %v", code, ids)
		}
		select {
		case <-t.Context().Done():
			t.Fatal("pushes never accepted again")
		case <-time.After(20 * time.Millisecond):
		}
	}
	// And from then on without delay.
	for i := range 5 {
		code, ids := push(5, 300+10*i)
		if code != 200 || len(ids) != 5 {
			t.Fatalf("push %d after recovery: HTTP %d, %d acknowledged", i, code, len(ids))
		}
		for _, id := range ids {
			acked[id] = true
		}
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	onTopic := recordsOnTopic(t.Context(), t, kc)
	for id := range acked {
		if !onTopic[id] {
			t.Errorf("acknowledged record %s is not on the topic", id)
		}
	}
	if len(acked) != 31 {
		t.Errorf("%d records acknowledged, want 31", len(acked))
	}
	// The records the outage held in the buffer went out when it ended;
	// a device that was told 503 resends them, deduplicated by id.
	for i := range 6 {
		if !onTopic[fmt.Sprintf("mv-%d", i)] {
			t.Errorf("record mv-%d, queued during the outage, was not written after it", i)
		}
	}
}
