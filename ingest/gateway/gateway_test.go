package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"

	"citywatch/event"
	"citywatch/ingest/rtp"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/internal/kafkaio/kafkatest"
	"citywatch/simulators"
)

// TestMain checks for leaked goroutines, except kafka-go's shared
// transport pool (used by the admin client and readers), as kafkaio's
// tests do; the gateway's own goroutines must all be gone.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/segmentio/kafka-go.(*connPool).discover"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreAnyFunction("github.com/segmentio/kafka-go.(*conn).run"),
	)
}

var (
	cityOnce sync.Once
	theCity  *city.City
)

func testCity(t testing.TB) *city.City {
	cityOnce.Do(func() {
		c, err := city.Default()
		if err != nil {
			panic(err)
		}
		theCity = c
	})
	return theCity
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testConfig() Config {
	return Config{
		HTTPAddr: "127.0.0.1:0",
		RTP:      rtpConfig(),
	}
}

type running struct {
	g    *Gateway
	reg  *prometheus.Registry
	stop func() error
}

// start runs a gateway until stop is called (or the test ends).
func start(t *testing.T, cfg Config, kc kafkaio.Config, w Writer) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	km := kafkaio.NewMetrics(reg)
	if w == nil {
		w = kc.NewWriter()
	}
	g, err := NewWithWriter(cfg, kc, w, testCity(t), reg, km, discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Listen(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return &running{g: g, reg: reg, stop: stop}
}

// readTopic returns every message of a topic from the start.
func readTopic(ctx context.Context, t *testing.T, kc kafkaio.Config, topic string) []kafka.Message {
	t.Helper()
	meta, err := kc.Client().Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	var out []kafka.Message
	for _, tp := range meta.Topics {
		for _, part := range tp.Partitions {
			conn, err := kafka.DialLeader(ctx, "tcp", kc.Brokers[0], topic, part.ID)
			if err != nil {
				t.Fatal(err)
			}
			last, err := conn.ReadLastOffset()
			conn.Close()
			if err != nil {
				t.Fatal(err)
			}
			if last == 0 {
				continue
			}
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: kc.Brokers, Topic: topic, Partition: part.ID, MaxWait: 50 * time.Millisecond})
			for off := int64(0); off < last; {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					r.Close()
					t.Fatal(err)
				}
				out = append(out, m)
				off = m.Offset + 1
			}
			r.Close()
		}
	}
	return out
}

func httpClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// TestEndToEnd: the simulators' RTP sender and GA/T 1400 client →
// gateway → Kafka topics → every message decodes with event.Decoder.
func TestEndToEnd(t *testing.T) {
	kc := kafkatest.Broker(t, 2)
	cfg := testConfig()
	r := start(t, cfg, kc, nil)
	c := testCity(t)
	cams := c.DevicesOf(city.KindCamera)[:5]
	kks := c.DevicesOf(city.KindCheckpoint)[:3]
	now := time.Now().Truncate(time.Millisecond)

	// RTP: 5 cameras, 4 documents each.
	snd, err := simulators.NewRTPSender(r.g.RTPAddr().String(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	wantRTP := map[string]event.Event{} // device + time → what was sent
	for i, cam := range cams {
		for j := range 4 {
			e := event.Event{ID: fmt.Sprintf("sim-%d-%d", i, j), Type: event.TypeCameraDetection, DeviceID: cam.ID,
				Time: now.Add(time.Duration(-60+j) * time.Second), Lat: cam.Lat, Lon: cam.Lon, CameraClass: cam.Class,
				Object: "person", Count: 1 + j, Confidence: 0.75, TrackID: fmt.Sprintf("t%d", j)}
			switch j {
			case 1:
				e.Object, e.Plate, e.PlateColor, e.Count = "vehicle", "鄂F1234"+fmt.Sprint(i), "blue", 1
			case 3:
				e.Behavior = "fight"
			}
			if err := snd.Send(&e); err != nil {
				t.Fatal(err)
			}
			wantRTP[cam.ID+e.Time.String()] = e
		}
	}

	// GA/T 1400: 30 passes in batches of 7.
	vc := simulators.NewVIIDClient("http://"+r.g.HTTPAddr().String(), 7)
	vc.HTTP = httpClient(t)
	acked := map[string]bool{}
	vc.OnStatus = func(id string, code int) {
		if code != 0 {
			t.Errorf("record %s: status %d", id, code)
		}
		acked[id] = true
	}
	for i := range 30 {
		kk := kks[i%len(kks)]
		e := event.Event{ID: fmt.Sprintf("pass-%03d", i), Type: event.TypeCheckpointPass, DeviceID: kk.ID, Time: now.Add(-time.Duration(i) * time.Second),
			Lane: 1 + i%3, Plate: fmt.Sprintf("鄂A%05d", i), PlateColor: "yellow", VehicleType: "truck", SpeedKmh: 50 + float64(i), Confidence: 0.9}
		if i%10 == 9 {
			e.Plate = ""
		}
		if err := vc.Add(t.Context(), &e); err != nil {
			t.Fatal(err)
		}
	}
	if err := vc.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(acked) != 30 {
		t.Fatalf("acked %d records, want 30", len(acked))
	}
	// Keepalive of a checkpoint: a heartbeat on the checkpoint topic.
	resp, err := vc.HTTP.Post("http://"+r.g.HTTPAddr().String()+"/VIID/System/Keepalive", "application/json",
		strings.NewReader(`{"KeepaliveObject":{"DeviceID":"`+kks[0].ID+`"}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	// Wait until the RTP documents are through (UDP on loopback), then
	// stop: the stop flushes the buffer.
	for r.g.RTP().Totals()["detections"] < 20 {
		select {
		case <-t.Context().Done():
			t.Fatalf("RTP totals %v", r.g.RTP().Totals())
		case <-time.After(10 * time.Millisecond):
		}
	}
	// Each stream's RFC 3550 report, for an operator.
	resp, err = vc.HTTP.Get("http://" + r.g.HTTPAddr().String() + "/rtp/streams?state=ok")
	if err != nil {
		t.Fatal(err)
	}
	var streams struct{ Streams []rtp.StreamReport }
	err = json.NewDecoder(resp.Body).Decode(&streams)
	resp.Body.Close()
	if err != nil || len(streams.Streams) != 5 {
		t.Errorf("GET /rtp/streams: %v, %+v; want 5 streams", err, streams)
	}
	for _, s := range streams.Streams {
		if s.Received == 0 || s.Lost != 0 || s.State != rtp.StateOK || s.CameraID == "" {
			t.Errorf("stream %+v", s)
		}
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	var d event.Decoder
	kinds := map[string]int{}
	for _, topic := range []string{kafkaio.TopicCamera, kafkaio.TopicCheckpoint} {
		for _, m := range readTopic(t.Context(), t, kc, kc.Topic(topic)) {
			var e event.Event
			if err := d.Decode(m.Value, &e); err != nil {
				t.Fatalf("%s: %s: %v", topic, m.Value, err)
			}
			if string(m.Key) != e.DeviceID {
				t.Errorf("key %q for device %q", m.Key, e.DeviceID)
			}
			kinds[topic+" "+e.Type.String()]++
			switch e.Type {
			case event.TypeCameraDetection:
				w, ok := wantRTP[e.DeviceID+e.Time.In(time.Local).String()]
				if !ok {
					w, ok = findRTP(wantRTP, &e)
				}
				if !ok {
					t.Errorf("unexpected detection %s", m.Value)
					continue
				}
				if e.Object != w.Object || e.Count != w.Count || e.Behavior != w.Behavior || e.Plate != normal(w.Plate) || e.PlateColor != w.PlateColor ||
					e.Confidence != w.Confidence || e.CameraClass != w.CameraClass || e.Lat != w.Lat || !strings.HasPrefix(e.ID, "rtp-") {
					t.Errorf("detection %s for %+v", m.Value, w)
				}
			case event.TypeCheckpointPass:
				id := strings.TrimPrefix(e.ID, "viid-mv-")
				if !acked[id] || e.VehicleType != "truck" || e.Lane < 1 {
					t.Errorf("pass %s", m.Value)
				}
				if e.Plate != "" && e.PlateColor != "yellow" {
					t.Errorf("pass %s: plate colour", m.Value)
				}
			}
		}
	}
	for k, n := range map[string]int{
		"camera camera.detection":     20,
		"checkpoint checkpoint.pass":  30,
		"checkpoint device.heartbeat": 1,
	} {
		if kinds[k] != n {
			t.Errorf("%s: %d messages, want %d (all: %v)", k, kinds[k], n, kinds)
		}
	}
	if kinds["camera device.heartbeat"] > 5 {
		t.Errorf("camera heartbeats %d for 5 streams", kinds["camera device.heartbeat"])
	}
}

func normal(p string) string {
	n, _ := event.NormalizePlate(p)
	return n
}

func findRTP(want map[string]event.Event, e *event.Event) (event.Event, bool) {
	for _, w := range want {
		if w.DeviceID == e.DeviceID && w.Time.Equal(e.Time) {
			return w, true
		}
	}
	return event.Event{}, false
}

// TestEveryKindDecodes: each kind of event the gateway writes is valid
// for event.Decoder and keeps its fields.
func TestEveryKindDecodes(t *testing.T) {
	tm := time.Date(2026, 11, 26, 8, 15, 30, 125e6, time.FixedZone("CST", 8*3600))
	events := []event.Event{
		{ID: "rtp-00000001-3600-1-0", Type: event.TypeCameraDetection, DeviceID: "cam-a-00001", Time: tm, Lat: 32.1, Lon: 112.1,
			CameraClass: "A", Object: "vehicle", Count: 1, Plate: "鄂F·12345", PlateColor: "blue", Confidence: 0.88, TrackID: "3"},
		{ID: "rtp-00000001-3600-1-1", Type: event.TypeCameraDetection, DeviceID: "cam-b-00002", Time: tm, Lat: 32.1, Lon: 112.1,
			CameraClass: "B", Object: "person", Behavior: "crowd", Count: 57, Confidence: 1},
		{ID: "rtp-00000001-health-1", Type: event.TypeCameraHealth, DeviceID: "cam-a-00001", Time: tm, Lat: 32.1, Lon: 112.1,
			Status: "video_loss", Detail: "loss 7.2% over 60s"},
		{ID: "rtp-00000001-health-2", Type: event.TypeCameraHealth, DeviceID: "cam-a-00001", Time: tm, Lat: 32.1, Lon: 112.1, Status: "ok"},
		{ID: "rtp-00000001-hb-1", Type: event.TypeDeviceHeartbeat, DeviceID: "cam-a-00001", Time: tm, Lat: 32.1, Lon: 112.1},
		{ID: "viid-mv-1", Type: event.TypeCheckpointPass, DeviceID: "kk-001", Time: tm, Lat: 32.3, Lon: 112.2,
			Lane: 2, Plate: "鄂F12345", PlateColor: "green", VehicleType: "car", VehicleColor: "white", SpeedKmh: 63.5, Confidence: 0.95},
		{ID: "viid-mv-2", Type: event.TypeCheckpointPass, DeviceID: "kk-001", Time: tm, Lat: 32.3, Lon: 112.2,
			Lane: 1, VehicleType: "other", Confidence: 1},
		{ID: "viid-face-1", Type: event.TypeCameraDetection, DeviceID: "cam-a-00001", Time: tm, Lat: 32.1, Lon: 112.1,
			CameraClass: "A", Object: "face", Count: 1, Confidence: 1},
		// A GA/T 1400 record's image references travel as an extra field,
		// which ingest keeps in attrs.
		{ID: "viid-mv-3", Type: event.TypeCheckpointPass, DeviceID: "kk-001", Time: tm, Lat: 32.3, Lon: 112.2,
			Lane: 1, Plate: "鄂F12345", PlateColor: "blue", VehicleType: "car", Confidence: 1,
			Attrs: []byte(`{"images":[{"id":"img-1","path":"http://10.20.1.5:6120/pic?=d7ei703-*0a1i","type":"01"}]}`)},
	}
	d := event.Decoder{Now: func() time.Time { return tm }}
	for _, want := range events {
		b := AppendRaw(nil, &want, city.Location)
		var got event.Event
		if err := d.Decode(b, &got); err != nil {
			t.Errorf("%s: %v", b, err)
			continue
		}
		if got.ID != want.ID || got.Type != want.Type || !got.Time.Equal(want.Time) || got.Status != want.Status || got.Detail != want.Detail ||
			got.Object != want.Object || got.Count != want.Count || got.Plate != normal(want.Plate) || got.Lane != want.Lane || got.Confidence != want.Confidence ||
			got.SpeedKmh != want.SpeedKmh || got.Behavior != want.Behavior || string(got.Attrs) != string(want.Attrs) {
			t.Errorf("%s decodes to %+v", b, got)
		}
	}
}

// failingWriter stands for a Kafka cluster that is down.
type failingWriter struct{}

func (failingWriter) WriteMessages(ctx context.Context, _ ...kafka.Message) error {
	return errors.New("kafka down")
}
func (failingWriter) Close() error { return nil }

// TestKafkaUnavailable: the buffer fills, GA/T 1400 is answered 503 with
// Retry-After, RTP events are dropped and counted.
func TestKafkaUnavailable(t *testing.T) {
	kc := kafkaio.Config{Brokers: []string{"127.0.0.1:1"}}
	kc.SetDefaults()
	cfg := testConfig()
	cfg.BufferSize = 10
	cfg.ShutdownTimeout = 200 * time.Millisecond
	cfg.VIID.AckTimeout = 200 * time.Millisecond
	r := start(t, cfg, kc, failingWriter{})
	base := "http://" + r.g.HTTPAddr().String()
	cl := httpClient(t)
	kk := testCity(t).DevicesOf(city.KindCheckpoint)[0]
	push := func(n, from int) *http.Response {
		resp, err := cl.Post(base+"/VIID/MotorVehicles", "application/json", strings.NewReader(motorVehicles(kk.ID, n, from)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	// More records than the buffer holds: busy at once.
	if resp := push(20, 0); resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("HTTP %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Records that fit wait for Kafka and are not acknowledged.
	if resp := push(6, 100); resp.StatusCode != 503 {
		t.Fatalf("HTTP %d, want 503", resp.StatusCode)
	}
	// RTP events beyond the buffer are dropped and counted.
	snd, err := simulators.NewRTPSender(r.g.RTPAddr().String(), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	cam := testCity(t).DevicesOf(city.KindCamera)[0]
	for i := range 30 {
		e := event.Event{Type: event.TypeCameraDetection, DeviceID: cam.ID, Time: time.Now().Add(time.Duration(i) * time.Millisecond), Object: "person", Count: 1, Confidence: 1}
		if err := snd.Send(&e); err != nil {
			t.Fatal(err)
		}
	}
	dropped := func(reason string) float64 { return counterValue(t, r.reg, "citywatch_gateway_dropped_total", reason) }
	for dropped("buffer_full") == 0 {
		select {
		case <-t.Context().Done():
			t.Fatalf("nothing dropped; RTP totals %v", r.g.RTP().Totals())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if resp, err := cl.Get(base + "/healthz"); err != nil || resp.StatusCode != 503 {
		t.Errorf("healthz %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// Stopping gives up on the buffer after ShutdownTimeout.
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if dropped("kafka_unavailable") == 0 {
		t.Errorf("RTP events left in the buffer at stop were not counted")
	}
}

// counterValue reads a counter with the given reason label from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
