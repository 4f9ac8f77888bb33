package rtp

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"citywatch/event"
	"citywatch/internal/city"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)

const camID = "cam-a-00001"

type sink struct {
	mu   sync.Mutex
	evs  []event.Event
	full bool // refuse events, as a full output buffer does
}

func (s *sink) emit(e *event.Event) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.full {
		return false
	}
	c := *e
	c.Attrs = nil
	s.evs = append(s.evs, c)
	return true
}

func (s *sink) take() []event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.evs
	s.evs = nil
	return out
}

func testRegistry() *Registry {
	return &Registry{bySSRC: map[uint32]*Camera{
		SSRC(camID): {ID: camID, Class: "A", Lat: 32.1, Lon: 112.1},
	}}
}

func newTestReceiver(t testing.TB, cfg Config) (*Receiver, *sink) {
	t.Helper()
	s := &sink{}
	r, err := New(cfg, testRegistry(), s.emit, prometheus.NewRegistry(), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	return r, s
}

func readDoc(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "onvif", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// packets splits doc into packets of at most size bytes.
func packets(p *Packetizer, doc []byte, ts uint32) [][]byte {
	var out [][]byte
	p.Packetize(nil, doc, ts, func(b []byte) { out = append(out, slices.Clone(b)) })
	return out
}

func TestParseDocument(t *testing.T) {
	ft := time.Date(2026, 11, 26, 0, 15, 30, 125e6, time.UTC)
	tests := []struct {
		file    string
		objects []Object
		notifs  []Notification
		skipped int
	}{
		{"objects.xml", []Object{
			{Time: ft, ID: "1", Class: "person", Likelihood: 0.91},
			{Time: ft, ID: "2", Class: "person", Likelihood: 0.95},
			{Time: ft, ID: "3", Class: "vehicle", Likelihood: 0.88, Plate: "鄂F·12345", PlateColor: "blue"},
			{Time: ft, ID: "4", Class: "face", Likelihood: 0.7},
			{Time: ft, ID: "5", Class: "non_motor", Likelihood: 0.6},
		}, nil, 1},
		{"candidates.xml", []Object{
			{Time: time.Date(2026, 11, 26, 0, 15, 31, 0, time.UTC), ID: "9", Class: "vehicle", Likelihood: 0.4, Plate: "鄂A&B123"},
		}, nil, 0},
		{"events.xml", nil, []Notification{
			{Time: time.Date(2026, 11, 26, 0, 16, 0, 500e6, time.UTC), Behavior: "loitering", Object: "person", Count: 1, Likelihood: 1},
			{Time: time.Date(2026, 11, 26, 0, 16, 2, 0, time.UTC), Behavior: "intrusion", Object: "person", Count: 1, Likelihood: 1},
			{Time: time.Date(2026, 11, 26, 0, 16, 3, 0, time.UTC), Behavior: "wrong_way", Object: "vehicle", Count: 1, Likelihood: 0.85},
			{Time: time.Date(2026, 11, 26, 0, 16, 4, 0, time.UTC), Behavior: "crowd", Object: "person", Count: 57, Likelihood: 1},
			{Time: time.Date(2026, 11, 26, 0, 16, 5, 0, time.UTC), Behavior: "smoke_fire", Object: "person", Count: 1, Likelihood: 1},
			{Time: time.Date(2026, 11, 26, 0, 16, 6, 0, time.UTC), Behavior: "fight", Object: "person", Count: 1, Likelihood: 0.92},
		}, 2},
	}
	var d Document
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			if err := d.Parse(readDoc(t, tt.file)); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.objects, d.Objects, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" && !(len(tt.objects) == 0 && len(d.Objects) == 0) {
				t.Errorf("objects (-want +got)\n%s", diff)
			}
			if diff := cmp.Diff(tt.notifs, d.Notifications); diff != "" && !(len(tt.notifs) == 0 && len(d.Notifications) == 0) {
				t.Errorf("notifications (-want +got)\n%s", diff)
			}
			if d.Skipped != tt.skipped {
				t.Errorf("skipped = %d, want %d", d.Skipped, tt.skipped)
			}
		})
	}
}

func TestParseDocumentRejects(t *testing.T) {
	bad := []string{
		``,
		`<foo/>`,
		`<tt:MetadataStream>`,
		`<tt:MetadataStream></tt:Other>`,
		`<!DOCTYPE x [<!ENTITY a "aaaa">]><tt:MetadataStream/>`,
		`<tt:MetadataStream/><tt:MetadataStream/>`,
		`<tt:MetadataStream a=1/>`,
		`<tt:MetadataStream>&bogus;</tt:MetadataStream>`,
		`text<tt:MetadataStream/>`,
		`<tt:MetadataStream>` + strings.Repeat("<a>", 40) + strings.Repeat("</a>", 40) + `</tt:MetadataStream>`,
	}
	var d Document
	for _, b := range bad {
		if err := d.Parse([]byte(b)); err == nil {
			t.Errorf("Parse(%q) = nil, want an error", b)
		}
	}
}

// feed sends the packets through the receiver's packet path at now.
func feed(r *Receiver, w *worker, pkts [][]byte, now time.Time) {
	for _, p := range pkts {
		w.handle(p, now)
	}
}

func TestReassemblyToDetections(t *testing.T) {
	r, s := newTestReceiver(t, Config{})
	w := r.newWorker()
	p := &Packetizer{SSRC: SSRC(camID), Seq: 65530, MaxSize: 300}
	doc := readDoc(t, "objects.xml")
	pkts := packets(p, doc, 1000)
	if len(pkts) < 6 {
		t.Fatalf("only %d packets", len(pkts))
	}
	// Reorder two packets after probation (and across the sequence
	// number wrap) and duplicate one: the document still comes out
	// whole, once.
	pkts[3], pkts[4] = pkts[4], pkts[3]
	pkts = append(pkts[:5], append([][]byte{pkts[4]}, pkts[5:]...)...)
	feed(r, w, pkts, t0)
	got := s.take()
	want := []struct {
		object, plate, color, track string
		count                       int
		conf                        float64
	}{
		{"person", "", "", "", 2, 0.95},
		{"vehicle", "鄂F·12345", "blue", "3", 1, 0.88},
		{"face", "", "", "4", 1, 0.7},
		{"non_motor", "", "", "5", 1, 0.6},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d: %+v", len(got), len(want), got)
	}
	ft := time.Date(2026, 11, 26, 0, 15, 30, 125e6, time.UTC)
	for i, w := range want {
		e := got[i]
		if e.Object != w.object || e.Plate != w.plate || e.PlateColor != w.color || e.TrackID != w.track ||
			e.Count != w.count || e.Confidence != w.conf || !e.Time.Equal(ft) || e.DeviceID != camID ||
			e.CameraClass != "A" || e.Lat != 32.1 || e.Type != event.TypeCameraDetection {
			t.Errorf("event %d = %+v, want %+v", i, e, w)
		}
	}
	// Ids are deterministic: the same document again (a resend) gives
	// the same ids.
	r2, s2 := newTestReceiver(t, Config{})
	feed(r2, r2.newWorker(), packets(&Packetizer{SSRC: SSRC(camID), Seq: 7, MaxSize: 300}, doc, 1000), t0.Add(time.Hour))
	got2 := s2.take()
	for i := range got {
		if got[i].ID != got2[i].ID {
			t.Errorf("id %d: %s then %s", i, got[i].ID, got2[i].ID)
		}
	}
	if tot := r.Totals(); tot["documents"] != 1 || tot["duplicates"] != 1 || tot["reordered"] != 1 {
		t.Errorf("totals %v", tot)
	}
}

func TestReassemblyLossAndLimits(t *testing.T) {
	doc := readDoc(t, "events.xml")
	tests := []struct {
		name      string
		cfg       Config
		mangle    func([][]byte) [][]byte
		advance   time.Duration // before the check
		wantDocs  int
		wantEvs   int
		wantCount string
	}{
		{"whole", Config{}, func(p [][]byte) [][]byte { return p }, 0, 1, 6, ""},
		{"middle lost, times out", Config{}, func(p [][]byte) [][]byte { return append(p[:2:2], p[3:]...) }, 3 * time.Second, 0, 0, "reassembly_timeout"},
		{"first lost after a known marker", Config{}, func(p [][]byte) [][]byte { return p[1:] }, 3 * time.Second, 0, 0, "reassembly_timeout"},
		{"too large", Config{MaxDocumentBytes: 1500}, func(p [][]byte) [][]byte { return p }, 0, 0, 0, "reassembly_overflow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, s := newTestReceiver(t, tt.cfg)
			w := r.newWorker()
			p := &Packetizer{SSRC: SSRC(camID), Seq: 100, MaxSize: 400}
			// A first small document establishes the previous marker.
			feed(r, w, packets(p, []byte(`<tt:MetadataStream/>`), 10), t0)
			feed(r, w, tt.mangle(packets(p, doc, 20)), t0)
			r.checkAll(t0.Add(tt.advance), t0)
			evs := 0
			for _, e := range s.take() {
				if e.Type == event.TypeCameraDetection {
					evs++
				}
			}
			tot := r.Totals()
			if int(tot["documents"]) != tt.wantDocs+1 || evs != tt.wantEvs {
				t.Errorf("documents %d events %d, want %d %d", tot["documents"], evs, tt.wantDocs+1, tt.wantEvs)
			}
			if tt.wantCount != "" && tot[tt.wantCount] != 1 {
				t.Errorf("%s = %d, want 1 (%v)", tt.wantCount, tot[tt.wantCount], tot)
			}
		})
	}
}

func TestUnknownAndMalformed(t *testing.T) {
	r, s := newTestReceiver(t, Config{})
	w := r.newWorker()
	feed(r, w, packets(&Packetizer{SSRC: 12345}, []byte(`<tt:MetadataStream/>`), 1), t0)
	w.handle([]byte{0x80, 0x60}, t0)
	w.handle([]byte{0x40, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1}, t0) // version 1
	tot := r.Totals()
	if tot["unknown_ssrc"] != 1 || tot["malformed"] != 2 || len(s.take()) != 0 {
		t.Errorf("totals %v", tot)
	}
}

// streamAt sends n single-packet documents, one every 40 ms from start,
// skipping the sequence numbers in lost.
func streamAt(r *Receiver, w *worker, p *Packetizer, start time.Time, n int, lost map[int]bool) time.Time {
	doc := []byte(`<tt:MetadataStream/>`)
	t := start
	for i := range n {
		t = start.Add(time.Duration(i) * 40 * time.Millisecond)
		ts := rtpUnits(t)
		if lost[i] {
			p.Seq++
			continue
		}
		feed(r, w, packets(p, doc, ts), t)
	}
	return t
}

func healthEvents(evs []event.Event) []string {
	var out []string
	for _, e := range evs {
		if e.Type == event.TypeCameraHealth {
			out = append(out, e.Status+": "+e.Detail)
		}
	}
	return out
}

func TestHealthStall(t *testing.T) {
	r, s := newTestReceiver(t, Config{StallTimeout: 10 * time.Second})
	w := r.newWorker()
	p := &Packetizer{SSRC: SSRC(camID)}
	last := streamAt(r, w, p, t0, 50, nil)
	steps := []struct {
		at   time.Time
		want []string
	}{
		{last.Add(5 * time.Second), nil},
		{last.Add(10 * time.Second), []string{"video_loss: stream stalled: no packets for 10s"}},
		{last.Add(20 * time.Second), nil}, // once per transition
	}
	prev := last
	for _, st := range steps {
		r.checkAll(st.at, prev)
		prev = st.at
		if diff := cmp.Diff(st.want, healthEvents(s.take())); diff != "" {
			t.Errorf("at %v: (-want +got)\n%s", st.at.Sub(last), diff)
		}
	}
	if ss, _ := r.Stream(SSRC(camID)); !ss.Degraded || r.degraded.Load() != 1 {
		t.Errorf("stream not degraded: %+v", ss)
	}
	// Packets again: ok at the next check, once.
	resumed := streamAt(r, w, p, last.Add(30*time.Second), 5, nil)
	r.checkAll(resumed.Add(time.Second), prev)
	if diff := cmp.Diff([]string{"ok: stream healthy again"}, healthEvents(s.take())); diff != "" {
		t.Errorf("recovery (-want +got)\n%s", diff)
	}
	r.checkAll(resumed.Add(2*time.Second), resumed.Add(time.Second))
	if got := healthEvents(s.take()); len(got) != 0 {
		t.Errorf("again: %v", got)
	}
}

func (s *sink) setFull(full bool) {
	s.mu.Lock()
	s.full = full
	s.mu.Unlock()
}

// TestHealthOutputFull: a health change that the output could not take is
// not taken as made; the next check sends it again.
func TestHealthOutputFull(t *testing.T) {
	type step struct {
		after  time.Duration // since the last packet
		full   bool
		send   int // packets sent 40 ms apart before the check
		want   []string
		degrad bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"stall while full, sent once room is made", []step{
			{after: 10 * time.Second, full: true, degrad: false},
			{after: 11 * time.Second, full: true, degrad: false},
			{after: 12 * time.Second, want: []string{"video_loss: stream stalled: no packets for 12s"}, degrad: true},
			{after: 13 * time.Second, degrad: true},
		}},
		{"recovery while full, sent once room is made", []step{
			{after: 10 * time.Second, want: []string{"video_loss: stream stalled: no packets for 10s"}, degrad: true},
			{send: 5, after: time.Second, full: true, degrad: true},
			{send: 5, after: time.Second, want: []string{"ok: stream healthy again"}, degrad: false},
			{after: 2 * time.Second, degrad: false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, s := newTestReceiver(t, Config{StallTimeout: 10 * time.Second, HeartbeatInterval: time.Hour})
			w := r.newWorker()
			p := &Packetizer{SSRC: SSRC(camID)}
			last := streamAt(r, w, p, t0, 50, nil)
			prev := last
			for i, st := range tt.steps {
				if st.send > 0 {
					last = streamAt(r, w, p, prev.Add(time.Second), st.send, nil)
				}
				s.setFull(st.full)
				at := last.Add(st.after)
				r.checkAll(at, prev)
				prev = at
				if diff := cmp.Diff(st.want, healthEvents(s.take())); diff != "" {
					t.Errorf("step %d: (-want +got)\n%s", i, diff)
				}
				if ss, _ := r.Stream(SSRC(camID)); ss.Degraded != st.degrad {
					t.Errorf("step %d: degraded = %v, want %v", i, ss.Degraded, st.degrad)
				}
			}
		})
	}
}

func TestHealthLoss(t *testing.T) {
	r, s := newTestReceiver(t, Config{LossWindow: time.Minute})
	w := r.newWorker()
	p := &Packetizer{SSRC: SSRC(camID)}
	// 1500 packets over a minute (25/s); lose 108 after probation: 7.2 %.
	lost := map[int]bool{}
	for i := 10; i < 10+108*13; i += 13 {
		lost[i] = true
	}
	end := streamAt(r, w, p, t0, 1501, lost)
	r.checkAll(t0.Add(time.Minute), end)
	if diff := cmp.Diff([]string{"video_loss: loss 7.2% over 60s"}, healthEvents(s.take())); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	// A clean minute clears it.
	end = streamAt(r, w, p, t0.Add(time.Minute), 1500, nil)
	r.checkAll(t0.Add(2*time.Minute), end)
	if diff := cmp.Diff([]string{"ok: stream healthy again"}, healthEvents(s.take())); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	if tot := r.Totals(); tot["lost"] != 108 {
		t.Errorf("lost = %d, want 108", tot["lost"])
	}
}

func TestHeartbeat(t *testing.T) {
	r, s := newTestReceiver(t, Config{HeartbeatInterval: 30 * time.Second})
	w := r.newWorker()
	p := &Packetizer{SSRC: SSRC(camID)}
	end := streamAt(r, w, p, t0, 10, nil)
	count := func() int {
		n := 0
		for _, e := range s.take() {
			if e.Type == event.TypeDeviceHeartbeat {
				n++
			}
		}
		return n
	}
	r.checkAll(end, t0)
	r.checkAll(end.Add(time.Second), end)
	if n := count(); n != 1 {
		t.Errorf("heartbeats = %d, want 1", n)
	}
	streamAt(r, w, p, end.Add(20*time.Second), 3, nil)
	r.checkAll(end.Add(31*time.Second), end.Add(time.Second))
	if n := count(); n != 1 {
		t.Errorf("heartbeats after 31 s = %d, want 1", n)
	}
}

func TestMaxStreams(t *testing.T) {
	reg := &Registry{bySSRC: map[uint32]*Camera{}}
	for i := range 3 {
		id := "cam-" + string(rune('a'+i))
		reg.bySSRC[SSRC(id)] = &Camera{ID: id, Class: "B"}
	}
	s := &sink{}
	r, err := New(Config{MaxStreams: 2}, reg, s.emit, prometheus.NewRegistry(), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	w := r.newWorker()
	for i := range 3 {
		feed(r, w, packets(&Packetizer{SSRC: SSRC("cam-" + string(rune('a'+i)))}, []byte(`<tt:MetadataStream/>`), 1), t0)
	}
	if tot := r.Totals(); tot["max_streams"] != 1 || r.nStreams.Load() != 2 {
		t.Errorf("totals %v streams %d", tot, r.nStreams.Load())
	}
}

// TestRunUDP sends over real sockets to a running receiver.
func TestRunUDP(t *testing.T) {
	r, s := newTestReceiver(t, Config{Addr: "127.0.0.1:0", Sockets: 2})
	if err := r.Listen(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	conn, err := net.Dial("udp", r.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := &Packetizer{SSRC: SSRC(camID), MaxSize: 500}
	doc := readDoc(t, "objects.xml")
	want := 0
	for i := range 20 {
		for _, b := range packets(p, doc, uint32(i)*3600) {
			if _, err := conn.Write(b); err != nil {
				t.Fatal(err)
			}
		}
		want += 4
	}
	// UDP on loopback does not lose packets here; wait for the events
	// (bounded by the test's deadline, not a timing assertion).
	for {
		s.mu.Lock()
		n := len(s.evs)
		s.mu.Unlock()
		if n >= want {
			break
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("got %d events, want %d", n, want)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var dets int
	for _, e := range s.take() {
		if e.Type == event.TypeCameraDetection {
			dets++
		}
	}
	if dets != want {
		t.Errorf("detections %d, want %d", dets, want)
	}
	if bytes.Contains([]byte(r.LocalAddr().String()), []byte(":0")) {
		t.Errorf("port not resolved: %s", r.LocalAddr())
	}
}

func registryOf(ids ...string) *Registry {
	reg := &Registry{bySSRC: map[uint32]*Camera{}}
	for _, id := range ids {
		reg.bySSRC[SSRC(id)] = &Camera{ID: id, Class: "B"}
	}
	return reg
}

func newReceiverOf(t testing.TB, cfg Config, ids ...string) (*Receiver, *sink) {
	t.Helper()
	s := &sink{}
	r, err := New(cfg, registryOf(ids...), s.emit, prometheus.NewRegistry(), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	return r, s
}

// paddedDoc is a document of about size bytes with one person.
func paddedDoc(id, size int) []byte {
	d := personDoc(id, t0)
	end := []byte(`</tt:VideoAnalytics></tt:MetadataStream>`)
	head := d[:len(d)-len(end)]
	pad := bytes.Repeat([]byte(" "), max(size-len(d), 0))
	return slices.Concat(head, pad, end)
}

// TestBufferBudget: the reassembly buffers of all streams stay within
// MaxBufferBytes; when one needs more, what the stream that has buffered
// the longest holds is abandoned and counted, once.
func TestBufferBudget(t *testing.T) {
	cams := []string{"cam-a", "cam-b", "cam-c"}
	type send struct{ cam, pkt int }
	tests := []struct {
		name      string
		script    []send
		wantIDs   []string
		wantDrops map[string]uint64
	}{
		// a holds 4 KiB since the start, b 2 KiB, c 2 KiB: b's third
		// packet needs 2 KiB more, and a's document goes.
		{"the oldest incomplete document goes", []send{
			{0, 0}, {0, 1}, {0, 2}, {1, 0}, {1, 1}, {2, 0}, {2, 1}, {1, 2},
			{0, 3}, {1, 3}, {2, 2}, {2, 3},
		}, []string{"1", "2"}, map[string]uint64{"memory_budget": 1}},
		// a holds its first packet and two more behind the missing
		// second: all of it goes, counted once; the second comes late.
		{"packets held behind a gap go with their document", []send{
			{0, 0}, {0, 2}, {0, 3}, {1, 0}, {1, 1}, {1, 2}, {2, 0}, {2, 1},
			{0, 1}, {1, 3}, {2, 2}, {2, 3},
		}, []string{"1", "2"}, map[string]uint64{"memory_budget": 1, "late_fragment": 1}},
		{"within the budget nothing goes", []send{
			{0, 0}, {0, 1}, {1, 0}, {1, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 0}, {2, 1}, {2, 2}, {2, 3},
		}, []string{"0", "1", "2"}, map[string]uint64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, s := newReceiverOf(t, Config{MaxDocumentBytes: 4096, MaxBufferBytes: 8192}, cams...)
			w := r.newWorker()
			var pkts [][][]byte
			for i, c := range cams {
				ps := packets(&Packetizer{SSRC: SSRC(c), Seq: 100, MaxSize: 912}, paddedDoc(i, 3500), 9000)
				if len(ps) != 4 {
					t.Fatalf("%d packets", len(ps))
				}
				pkts = append(pkts, ps)
			}
			now := t0
			for _, sd := range tt.script {
				w.handle(pkts[sd.cam][sd.pkt], now)
				now = now.Add(time.Millisecond)
				if b := r.bufBytes.Load(); b > 8192 {
					t.Fatalf("after %v: %d bytes buffered", sd, b)
				}
			}
			if diff := cmp.Diff(tt.wantIDs, detectionIDs(s.take())); diff != "" {
				t.Errorf("detections (-want +got)\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantDrops, drops(r.Totals())); diff != "" {
				t.Errorf("dropped (-want +got)\n%s", diff)
			}
			if b := r.bufBytes.Load(); b != 0 {
				t.Errorf("%d bytes still buffered", b)
			}
		})
	}
}

// TestIdleEviction: a stream silent for IdleTimeout whose stall was
// reported is forgotten, so that another camera can take its place; when
// it comes back it is reported ok. One whose stall could not be reported
// is kept until it is.
func TestIdleEviction(t *testing.T) {
	type step struct {
		at      time.Duration // after t0
		send    []string      // cameras that send five documents first
		full    bool
		want    []string // health events
		streams int64
	}
	tests := []struct {
		name        string
		steps       []step
		wantEvicted uint64
	}{
		{"evicted after the stall is reported", []step{
			{at: time.Second, send: []string{"cam-a", "cam-b", "cam-c"}, streams: 2},
			{at: 12 * time.Second, want: []string{"video_loss: stream stalled: no packets for 11s", "video_loss: stream stalled: no packets for 11s"}, streams: 2},
			{at: 2 * time.Minute, streams: 0},
			{at: 3 * time.Minute, send: []string{"cam-c", "cam-a"}, want: []string{"ok: stream healthy again"}, streams: 2},
		}, 2},
		{"kept while its stall could not be reported", []step{
			{at: time.Second, send: []string{"cam-a"}, streams: 1},
			{at: 12 * time.Second, full: true, streams: 1},
			{at: 2 * time.Minute, full: true, streams: 1},
			{at: 3 * time.Minute, want: []string{"video_loss: stream stalled: no packets for 179s"}, streams: 0},
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, s := newReceiverOf(t, Config{MaxStreams: 2, StallTimeout: 10 * time.Second, IdleTimeout: time.Minute,
				HeartbeatInterval: time.Hour}, "cam-a", "cam-b", "cam-c")
			w := r.newWorker()
			pz := map[string]*Packetizer{}
			prev := t0
			for i, st := range tt.steps {
				at := t0.Add(st.at)
				for _, c := range st.send {
					if pz[c] == nil {
						pz[c] = &Packetizer{SSRC: SSRC(c)}
					}
					streamAt(r, w, pz[c], at.Add(-time.Second), 5, nil)
				}
				s.setFull(st.full)
				r.checkAll(at, prev)
				prev = at
				if diff := cmp.Diff(st.want, healthEvents(s.take())); diff != "" {
					t.Errorf("step %d: health (-want +got)\n%s", i, diff)
				}
				if n := r.nStreams.Load(); n != st.streams {
					t.Errorf("step %d: %d streams, want %d", i, n, st.streams)
				}
			}
			if n := r.Totals()["evicted"]; n != tt.wantEvicted {
				t.Errorf("evicted %d, want %d", n, tt.wantEvicted)
			}
		})
	}
}

// TestMaxStreamsConcurrent: readers of different shards creating streams
// at once never exceed MaxStreams together.
func TestMaxStreamsConcurrent(t *testing.T) {
	const readers, perReader, limit = 4, 40, 50
	var ids []string
	for i := range readers * perReader {
		ids = append(ids, fmt.Sprintf("cam-%03d", i))
	}
	r, _ := newReceiverOf(t, Config{MaxStreams: limit}, ids...)
	var wg sync.WaitGroup
	for g := range readers {
		w := r.newWorker()
		wg.Go(func() {
			for _, id := range ids[g*perReader : (g+1)*perReader] {
				feed(r, w, packets(&Packetizer{SSRC: SSRC(id)}, []byte(`<tt:MetadataStream/>`), 1), t0)
			}
		})
	}
	wg.Wait()
	held := 0
	for i := range r.shards {
		held += len(r.shards[i].streams)
	}
	if held != limit || r.nStreams.Load() != limit || r.Totals()["max_streams"] != readers*perReader-limit {
		t.Errorf("%d streams held, %d counted, %d refused; want %d, %d, %d",
			held, r.nStreams.Load(), r.Totals()["max_streams"], limit, limit, readers*perReader-limit)
	}
}

// TestStreams checks the per-stream reports: figures, state, order; and
// that taking them while packets arrive is safe (under -race).
func TestStreams(t *testing.T) {
	r, s := newReceiverOf(t, Config{LossWindow: time.Minute, StallTimeout: 10 * time.Second, HeartbeatInterval: time.Hour},
		"cam-c", "cam-a", "cam-b")
	w := r.newWorker()
	// cam-a: clean; cam-b: 10 % lost; cam-c: clean, then stalls.
	lost := map[int]bool{}
	for i := 10; i < 1500; i += 10 {
		lost[i] = true
	}
	streamAt(r, w, &Packetizer{SSRC: SSRC("cam-a"), Seq: 500}, t0, 1500, nil)
	streamAt(r, w, &Packetizer{SSRC: SSRC("cam-b"), Seq: 65000}, t0, 1500, lost)
	streamAt(r, w, &Packetizer{SSRC: SSRC("cam-c")}, t0, 100, nil)
	r.checkAll(t0.Add(time.Minute), t0.Add(59*time.Second))
	s.take()
	got := r.Streams()
	cEnd := t0.Add(99 * 40 * time.Millisecond)
	want := []StreamReport{
		{CameraID: "cam-a", SSRC: SSRC("cam-a"), Expected: 1499, Received: 1499, LastPacket: t0.Add(1499 * 40 * time.Millisecond), State: StateOK},
		// 149 of 1499 lost: 149*256/1499 = 25.
		{CameraID: "cam-b", SSRC: SSRC("cam-b"), Expected: 1499, Received: 1350, Lost: 149, FractionLost: 25,
			LastPacket: t0.Add(1499 * 40 * time.Millisecond), State: StateDegraded},
		{CameraID: "cam-c", SSRC: SSRC("cam-c"), Expected: 99, Received: 99, LastPacket: cEnd, State: StateStalled},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	// Jitter: a packet 9 ms late on cam-a shows in both units.
	p := &Packetizer{SSRC: SSRC("cam-a"), Seq: 2000}
	at := t0.Add(2 * time.Minute)
	feed(r, w, packets(p, []byte(`<tt:MetadataStream/>`), rtpUnits(at)), at)
	feed(r, w, packets(p, []byte(`<tt:MetadataStream/>`), rtpUnits(at.Add(40*time.Millisecond))), at.Add(49*time.Millisecond))
	for _, rep := range r.Streams() {
		if rep.CameraID == "cam-a" && (rep.Jitter == 0 || rep.JitterMs != rep.Jitter/90) {
			t.Errorf("jitter %v units, %v ms", rep.Jitter, rep.JitterMs)
		}
	}
	// Concurrent use.
	var wg sync.WaitGroup
	wg.Go(func() { streamAt(r, r.newWorker(), p, at.Add(time.Second), 200, nil) })
	for range 20 {
		if n := len(r.Streams()); n != 3 {
			t.Errorf("%d streams", n)
		}
	}
	wg.Wait()
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // in the error; "" for none
	}{
		{"defaults", Config{}, ""},
		{"budget below one document", Config{MaxDocumentBytes: 1 << 20, MaxBufferBytes: 1 << 19}, "gateway.rtp.max_buffer_bytes"},
		{"budget follows a large document limit", Config{MaxDocumentBytes: 128 << 20}, ""},
		{"reorder wait beyond the reassembly timeout", Config{ReorderWait: 3 * time.Second}, "gateway.rtp.reorder_wait"},
		{"negative reorder wait", Config{ReorderWait: -time.Second}, "gateway.rtp.reorder_wait"},
		{"idle timeout within the stall timeout", Config{IdleTimeout: 5 * time.Second}, "gateway.rtp.idle_timeout"},
		{"defaults follow a long stall timeout", Config{StallTimeout: time.Hour}, ""},
		{"defaults follow a short reassembly timeout", Config{ReassemblyTimeout: 50 * time.Millisecond}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg
			c.SetDefaults()
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

// TestMetrics gathers the receiver's metrics: the gauges of streams and
// buffered bytes and the new drop reasons are there, without camera
// labels.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	r, err := New(Config{}, testRegistry(), (&sink{}).emit, reg, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	w := r.newWorker()
	p := &Packetizer{SSRC: SSRC(camID), MaxSize: 200}
	pkts := packets(p, readDoc(t, "objects.xml"), 1)
	feed(r, w, pkts[:len(pkts)-1], t0) // a document in progress
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() != "reason" {
					t.Errorf("%s has label %s", name, l.GetName())
				}
				name += "{" + l.GetValue() + "}"
			}
			got[name] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	for name, want := range map[string]float64{
		"citywatch_rtp_streams":                                1,
		"citywatch_rtp_buffered_bytes":                         float64(r.bufBytes.Load()),
		"citywatch_rtp_documents_dropped_total{memory_budget}": 0,
		"citywatch_rtp_documents_dropped_total{restart}":       0,
		"citywatch_rtp_packets_dropped_total{out_of_sequence}": 0,
		"citywatch_rtp_streams_evicted_total":                  0,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	if r.bufBytes.Load() == 0 {
		t.Error("nothing buffered for the document in progress")
	}
}

// TestRegistrySSRC: a camera streams with the SSRC its platform assigned
// when the city file gives one, with the hash of its id otherwise; ids
// whose SSRCs collide are left out rather than confused.
func TestRegistrySSRC(t *testing.T) {
	c := &city.City{Devices: []city.Device{
		{ID: "cam-given", Kind: city.KindCamera, Class: "A", SSRC: 1234567890},
		{ID: "cam-hashed", Kind: city.KindCamera, Class: "B"},
		{ID: "cam-clash-1", Kind: city.KindCamera, SSRC: 42},
		{ID: "cam-clash-2", Kind: city.KindCamera, SSRC: 42},
		{ID: "kk-1", Kind: city.KindCheckpoint, SSRC: 7},
	}}
	r := NewRegistry(c)
	for ssrc, want := range map[uint32]string{1234567890: "cam-given", SSRC("cam-hashed"): "cam-hashed", SSRC("cam-given"): "", 42: "", 7: ""} {
		got := ""
		if cam := r.Lookup(ssrc); cam != nil {
			got = cam.ID
		}
		if got != want {
			t.Errorf("Lookup(%d) = %q, want %q", ssrc, got, want)
		}
	}
	if r.Len() != 2 || r.Collisions != 2 {
		t.Errorf("%d cameras, %d collisions; want 2 and 2", r.Len(), r.Collisions)
	}
}

// TestBudgetKeepsPacketInWindow: a packet that arrives inside the reorder
// window when the budget has no room to hold it is handed on after the
// held packets before it; the held ones after it wait on rather than
// overtake it (which made it late and lost its document).
func TestBudgetKeepsPacketInWindow(t *testing.T) {
	// 2,600 bytes hold the packets of documents 3 and 10, not 5 as well.
	r, s := newReceiverOf(t, Config{MaxDocumentBytes: 1500, MaxBufferBytes: 2600}, "cam-a")
	w := r.newWorker()
	p := &Packetizer{SSRC: SSRC("cam-a"), Seq: 100, MaxSize: 1200}
	var docs [][]byte
	for i := range 12 {
		ps := packets(p, paddedDoc(i, 700), uint32(9000+i*3600))
		if len(ps) != 1 {
			t.Fatalf("%d packets", len(ps))
		}
		docs = append(docs, ps[0])
	}
	now := t0
	for _, i := range []int{0, 3, 10, 5, 11} {
		w.handle(docs[i], now)
		now = now.Add(time.Millisecond)
	}
	got := detectionIDs(s.take())
	for _, id := range []string{"0", "3", "5"} {
		if !slices.Contains(got, id) {
			t.Errorf("detections %v: %s missing", got, id)
		}
	}
	if n := r.Totals()["late_fragment"]; n != 0 {
		t.Errorf("%d late fragments, want 0 (detections %v)", n, got)
	}
}
