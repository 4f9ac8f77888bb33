package ingest

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/kafkaio"
	"citywatch/simulators"
)

// recorder is a Writer that keeps what it is given.
type recorder struct {
	msgs []kafka.Message
	err  error
}

func (r *recorder) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	if r.err != nil {
		return r.err
	}
	for _, m := range msgs {
		m.Key = append([]byte(nil), m.Key...)
		m.Value = append([]byte(nil), m.Value...)
		hs := make([]kafka.Header, len(m.Headers))
		for i, h := range m.Headers {
			hs[i] = kafka.Header{Key: h.Key, Value: append([]byte(nil), h.Value...)}
		}
		m.Headers = hs
		r.msgs = append(r.msgs, m)
	}
	return nil
}

func newTestWorker(t testing.TB, w Writer) *worker {
	t.Helper()
	kc := kafkaio.Config{Brokers: []string{"127.0.0.1:1"}}
	kc.SetDefaults()
	in, err := New(Config{DedupeSize: 1 << 20}, kc, []byte("0123456789abcdef0123"), w, prometheus.NewRegistry(), kafkaio.NewMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	wk, err := in.newWorker()
	if err != nil {
		t.Fatal(err)
	}
	return wk
}

func TestWorkerRoutes(t *testing.T) {
	now := time.Now().Format(time.RFC3339)
	fuel := `{"id":"f1","type":"fuel.purchase","device_id":"fuel-1","time":"` + now + `","lat":32,"lon":112,"station_id":"st-1","buyer_id":"11010519491231002X","buyer_name":"张三","fuel":"92","container":"bulk","volume_l":30}`
	hb := `{"id":"h1","type":"device.heartbeat","device_id":"cam-1","time":"` + now + `","lat":32,"lon":112}`
	tests := []struct {
		name     string
		topic    string
		value    string
		wantTo   string // topic of the output, "" for none
		wantCode event.Code
		buyers   bool // written again to the buyers' topic
	}{
		{"valid heartbeat", "citywatch.camera", hb, "citywatch.internal.events", "", false},
		{"duplicate id dropped", "citywatch.camera", hb, "", "", false},
		{"fuel pseudonymised", "citywatch.fuel", fuel, "citywatch.internal.events", "", true},
		{"fuel on wrong topic", "citywatch.camera", strings.Replace(fuel, `"f1"`, `"f2"`, 1), "citywatch.dlq", CodeWrongTopic, false},
		{"not json", "citywatch.drone", "{{", "citywatch.dlq", event.CodeMalformed, false},
		{"huge", "citywatch.camera", `{"id":"` + strings.Repeat("x", 100<<10) + `"}`, "citywatch.dlq", event.CodeTooLarge, false},
	}
	rec := &recorder{}
	w := newTestWorker(t, rec)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec.msgs = nil
			published := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
			w.Add(&kafka.Message{Topic: tt.topic, Key: []byte("k"), Value: []byte(tt.value), Offset: 7, Time: published})
			if err := w.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
			if tt.wantTo == "" {
				if len(rec.msgs) != 0 {
					t.Fatalf("wrote %d messages, want none", len(rec.msgs))
				}
				return
			}
			if tt.buyers {
				// The purchase again, keyed by the buyer's pseudonym, for
				// the rules' restart.
				if len(rec.msgs) != 2 || rec.msgs[1].Topic != "citywatch.internal.events.fuel" {
					t.Fatalf("wrote %v, want the purchase on citywatch.internal.events.fuel too", rec.msgs)
				}
				var e event.Event
				if err := (&event.Decoder{}).DecodeNormalized(rec.msgs[0].Value, &e); err != nil {
					t.Fatal(err)
				}
				b := rec.msgs[1]
				if string(b.Key) != e.BuyerPseudonym || e.BuyerPseudonym == "" || string(b.Value) != string(rec.msgs[0].Value) || len(b.Headers) != 1 {
					t.Errorf("buyers' record key %q, %d headers, value %s; want key %q and the events record's value and header", b.Key, len(b.Headers), b.Value, e.BuyerPseudonym)
				}
				rec.msgs = rec.msgs[:1]
			}
			if len(rec.msgs) != 1 || rec.msgs[0].Topic != tt.wantTo {
				t.Fatalf("wrote %v, want one message to %s", rec.msgs, tt.wantTo)
			}
			out := rec.msgs[0].Value
			// An event carries when its raw message was published, for
			// the rules' restart replay.
			got, ok := kafkaio.Published(&rec.msgs[0])
			if wantHeader := tt.wantTo == "citywatch.internal.events"; ok != wantHeader || ok && !got.Equal(published) {
				t.Errorf("published header %v (%v), want %v (%v)", got, ok, published, wantHeader)
			}
			if strings.Contains(string(out), "11010519491231002X") || strings.Contains(string(out), "张三") {
				t.Errorf("personal data left in output: %s", out)
			}
			if tt.wantTo == "citywatch.dlq" {
				var r event.Rejected
				if err := event.DecodeRejected(out, &r); err != nil {
					t.Fatal(err)
				}
				if r.Code != tt.wantCode || r.Topic != tt.topic || r.Offset != 7 || r.Error == "" {
					t.Errorf("DLQ record %+v, want code %s from %s offset 7", r, tt.wantCode, tt.topic)
				}
				if len(r.Payload) > 64<<10 {
					t.Errorf("DLQ payload of %d bytes not cut", len(r.Payload))
				}
			}
		})
	}
}

func TestWorkerFlushFailureKeepsBatch(t *testing.T) {
	rec := &recorder{err: io.ErrClosedPipe}
	w := newTestWorker(t, rec)
	hb := `{"id":"h1","type":"device.heartbeat","device_id":"cam-1","time":"` + time.Now().Format(time.RFC3339) + `","lat":32,"lon":112}`
	w.Add(&kafka.Message{Topic: "citywatch.camera", Value: []byte(hb)})
	if err := w.Flush(t.Context()); err == nil {
		t.Fatal("Flush succeeded with a failing writer")
	}
	rec.err = nil
	if err := w.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(rec.msgs) != 1 {
		t.Fatalf("retried flush wrote %d messages, want the 1 kept from the failed attempt", len(rec.msgs))
	}
}

type discard struct{}

func (discard) WriteMessages(context.Context, ...kafka.Message) error { return nil }

// BenchmarkWorker measures one core's ingest: decode, validate, dedupe,
// pseudonymise and re-encode, with a writer that does nothing.
func BenchmarkWorker(b *testing.B) {
	load := simulators.NewLoad(1, "citywatch.", "bench")
	var msgs []kafka.Message
	var arena []byte
	const batch = 2000
	w := newTestWorker(b, discard{})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		b.StopTimer()
		now := time.Now()
		msgs, arena = load.Append(msgs[:0], arena[:0], now, batch)
		for j := range msgs {
			msgs[j].Time = now // as read from Kafka: the record's timestamp
		}
		b.StartTimer()
		for j := range msgs {
			w.Add(&msgs[j])
		}
		if err := w.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
