package rtp

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"citywatch/event"
)

// personDoc is a one-packet document with one person; its frame has no
// UtcTime when at is zero, so that the receiver maps the RTP timestamp.
func personDoc(id int, at time.Time) []byte {
	utc := ""
	if !at.IsZero() {
		utc = ` UtcTime="` + at.UTC().Format("2006-01-02T15:04:05.000Z") + `"`
	}
	return fmt.Appendf(nil, `<tt:MetadataStream xmlns:tt="http://www.onvif.org/ver10/schema"><tt:VideoAnalytics>`+
		`<tt:Frame%s><tt:Object ObjectId="%d"><tt:Appearance><tt:Class><tt:Type Likelihood="0.9">Human</tt:Type>`+
		`</tt:Class></tt:Appearance></tt:Object></tt:Frame></tt:VideoAnalytics></tt:MetadataStream>`, utc, id)
}

// docPackets packetizes the documents in order, one RTP timestamp each,
// 40 ms apart: the packets of document i are out[i].
func docPackets(p *Packetizer, docs [][]byte) [][][]byte {
	out := make([][][]byte, len(docs))
	for i, d := range docs {
		out[i] = packets(p, d, uint32(1000+i*3600))
	}
	return out
}

// detectionIDs returns the track ids of the detections in evs, in order.
func detectionIDs(evs []event.Event) []string {
	var out []string
	for _, e := range evs {
		if e.Type == event.TypeCameraDetection {
			out = append(out, e.TrackID)
		}
	}
	return out
}

// drops returns the non-zero reasons of documents_dropped_total.
func drops(tot map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for _, k := range []string{"parse_error", "reassembly_timeout", "reassembly_overflow", "incomplete",
		"late_fragment", "memory_budget", "restart"} {
		if tot[k] != 0 {
			out[k] = tot[k]
		}
	}
	return out
}

// TestReorder sends documents with packets swapped, late or lost: what
// is only out of order comes out whole and in order; what is lost is
// counted once, with its reason.
func TestReorder(t *testing.T) {
	// order lists packets as (document, packet) in the order sent.
	type pk struct{ doc, pkt int }
	seq := func(n int) []pk {
		var out []pk
		for i := range n {
			out = append(out, pk{i, 0})
		}
		return out
	}
	swap := func(o []pk, i, j int) []pk { o = slices.Clone(o); o[i], o[j] = o[j], o[i]; return o }
	drop := func(o []pk, i int) []pk { return slices.Delete(slices.Clone(o), i, i+1) }
	tests := []struct {
		name      string
		size      int // packet size; 0: one packet per document
		docs      int
		order     func(pkts [][][]byte) []pk
		wantIDs   []string
		wantDrops map[string]uint64
		wantLost  uint64
	}{
		{"in order", 0, 6, func([][][]byte) []pk { return seq(6) }, ids(0, 1, 2, 3, 4, 5), nil, 0},
		{"two adjacent one-packet documents swapped", 0, 6,
			func([][][]byte) []pk { return swap(seq(6), 2, 3) }, ids(0, 1, 2, 3, 4, 5), nil, 0},
		{"a document three places late", 0, 8,
			func([][][]byte) []pk {
				o := seq(8)
				return append(append(o[:2:2], o[3:6]...), append([]pk{o[2]}, o[6:]...)...)
			},
			ids(0, 1, 2, 3, 4, 5, 6, 7), nil, 0},
		{"two-packet documents interleaved", 200, 4, func([][][]byte) []pk {
			return []pk{{0, 0}, {0, 1}, {1, 0}, {2, 0}, {1, 1}, {2, 1}, {3, 0}, {3, 1}}
		}, ids(0, 1, 2, 3), nil, 0},
		{"the last packet of a document after the next document", 200, 4, func([][][]byte) []pk {
			return []pk{{0, 0}, {0, 1}, {1, 0}, {2, 0}, {2, 1}, {1, 1}, {3, 0}, {3, 1}}
		}, ids(0, 1, 2, 3), nil, 0},
		// Every block of 8 packets but the first (which starts the
		// stream's sequence) shuffled: nothing is lost.
		{"shuffled within blocks of 8 packets", 200, 100, func(pkts [][][]byte) []pk {
			var o []pk
			for d := range pkts {
				o = append(o, pk{d, 0}, pk{d, 1})
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for b := 8; b < len(o); b += 8 {
				blk := o[b:min(b+8, len(o))]
				rng.Shuffle(len(blk), func(i, j int) { blk[i], blk[j] = blk[j], blk[i] })
			}
			return o
		}, seqIDs(100), nil, 0},
		// Later than ReorderWait (250 ms here) is lost: the documents
		// after it go on without it, and it is counted as late.
		{"a document later than the reorder wait", 0, 30, func([][][]byte) []pk {
			o := seq(30)
			return append(append(o[:2:2], o[3:28]...), append([]pk{o[2]}, o[28:]...)...)
		}, slices.Delete(seqIDs(30), 2, 3), map[string]uint64{"late_fragment": 1}, 0},
		// A lost one-packet document is lost alone: the next one, whose
		// beginning cannot be known to follow the previous marker, is
		// still whole.
		{"a one-packet document lost", 0, 6,
			func([][][]byte) []pk { return drop(seq(6), 3) }, ids(0, 1, 2, 4, 5), nil, 1},
		// A document without its second packet is counted once.
		{"the second packet of a document lost", 200, 4, func([][][]byte) []pk {
			return []pk{{0, 0}, {0, 1}, {1, 0}, {2, 0}, {2, 1}, {3, 0}, {3, 1}}
		}, ids(0, 2, 3), map[string]uint64{"reassembly_timeout": 1}, 1},
		// Without its first packet a document cannot be read; counted once.
		{"the first packet of a document lost", 200, 4, func([][][]byte) []pk {
			return []pk{{0, 0}, {0, 1}, {1, 1}, {2, 0}, {2, 1}, {3, 0}, {3, 1}}
		}, ids(0, 2, 3), map[string]uint64{"reassembly_timeout": 1}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, s := newTestReceiver(t, Config{})
			w := r.newWorker()
			docs := make([][]byte, tt.docs)
			for i := range docs {
				docs[i] = personDoc(i, t0)
			}
			p := &Packetizer{SSRC: SSRC(camID), Seq: 65533, MaxSize: tt.size}
			pkts := docPackets(p, docs)
			if want := map[bool]int{true: 1, false: 2}[tt.size == 0]; len(pkts[0]) != want {
				t.Fatalf("%d packets per document, want %d", len(pkts[0]), want)
			}
			now := t0
			for _, k := range tt.order(pkts) {
				w.handle(pkts[k.doc][k.pkt], now)
				now = now.Add(10 * time.Millisecond)
			}
			r.checkAll(now.Add(3*time.Second), now)
			if diff := cmp.Diff(tt.wantIDs, detectionIDs(s.take())); diff != "" {
				t.Errorf("detections (-want +got)\n%s", diff)
			}
			tot := r.Totals()
			want := tt.wantDrops
			if want == nil {
				want = map[string]uint64{}
			}
			if diff := cmp.Diff(want, drops(tot)); diff != "" {
				t.Errorf("dropped documents (-want +got)\n%s", diff)
			}
			if tot["lost"] != tt.wantLost {
				t.Errorf("lost packets = %d, want %d", tot["lost"], tt.wantLost)
			}
		})
	}
}

func seqIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprint(i)
	}
	return out
}

func ids(n ...int) []string {
	out := make([]string, len(n))
	for i, v := range n {
		out[i] = fmt.Sprint(v)
	}
	return out
}

// TestFallbackTime checks the time of documents without UtcTime: the RTP
// timestamp mapped to the arrival, hours into a stream (past the 2³¹
// ticks of a signed 32-bit difference), when the sender's clock drifts,
// and after the sender restarted with new sequence numbers and
// timestamps.
func TestFallbackTime(t *testing.T) {
	const hour = time.Hour
	tests := []struct {
		name    string
		ppm     float64       // sender clock error
		restart time.Duration // when the sender restarts; 0: never
		span    time.Duration // the last document's arrival after the first
		within  time.Duration
	}{
		{"6.7 h into the stream", 0, 0, 6*hour + 42*time.Minute, time.Millisecond},
		{"13.5 h into the stream", 0, 0, 13*hour + 30*time.Minute, time.Millisecond},
		{"sender clock 100 ppm fast, 6.7 h", 100, 0, 6*hour + 42*time.Minute, 10 * time.Millisecond},
		{"just after a restart", 0, 3 * hour, 3*hour + 40*time.Millisecond, time.Millisecond},
		{"after a restart 6.7 h in", 0, 6*hour + 40*time.Minute, 6*hour + 41*time.Minute, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, s := newTestReceiver(t, Config{})
			w := r.newWorker()
			p := &Packetizer{SSRC: SSRC(camID), Seq: 100}
			ts0 := uint32(0xfff0_0000) // wraps early
			// A document every 10 minutes, then the last ones 20 ms apart.
			var times []time.Duration
			for d := time.Duration(0); d < tt.span-time.Second; d += 10 * time.Minute {
				if tt.restart == 0 || d < tt.restart {
					times = append(times, d)
				}
			}
			if tt.restart != 0 {
				times = append(times, tt.restart)
			}
			times = append(times, tt.span-20*time.Millisecond, tt.span)
			restarted := false
			for i, d := range times {
				if tt.restart != 0 && d >= tt.restart && !restarted {
					restarted = true
					p.Seq += 30000
					ts0 = 12345 - uint32(int64(d)*ClockRate/int64(time.Second))
				}
				ticks := float64(d) * ClockRate / float64(time.Second) * (1 + tt.ppm/1e6)
				feed(r, w, packets(p, personDoc(i, time.Time{}), ts0+uint32(uint64(ticks))), t0.Add(d))
			}
			evs := s.take()
			if len(evs) != len(times) {
				t.Fatalf("%d events for %d documents", len(evs), len(times))
			}
			for _, e := range evs {
				var i int
				fmt.Sscan(e.TrackID, &i)
				want := t0.Add(times[i])
				if diff := e.Time.Sub(want); diff > tt.within || diff < -tt.within {
					t.Errorf("document %d at %v: time off by %v", i, times[i], diff)
				}
			}
		})
	}
}

// TestRestart sends a stream whose sender restarts with new sequence
// numbers and timestamps: the first document of the new numbering is
// delivered, and the jitter stays that of the network.
func TestRestart(t *testing.T) {
	tests := []struct {
		name   string
		newSeq uint16
		newTS  uint32
		size   int
	}{
		{"forward jump, one-packet documents", 40000, 7, 0},
		{"backward jump, one-packet documents", 50, 7, 0},
		{"forward jump, three-packet documents", 40000, 1 << 31, 140},
		{"backward jump, three-packet documents", 10, 1 << 31, 140},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, s := newTestReceiver(t, Config{})
			w := r.newWorker()
			p := &Packetizer{SSRC: SSRC(camID), Seq: 1000, MaxSize: tt.size}
			now := t0
			for i := range 20 {
				now = t0.Add(time.Duration(i) * 40 * time.Millisecond)
				feed(r, w, packets(p, personDoc(i, now), rtpUnits(now)), now)
			}
			before := len(detectionIDs(s.take()))
			base := now.Add(time.Second)
			p.Seq = tt.newSeq
			if n := len(packets(&Packetizer{MaxSize: tt.size}, personDoc(100, base), 0)); tt.size != 0 && n != 3 {
				t.Fatalf("%d packets per document", n)
			}
			for i := range 5 {
				at := base.Add(time.Duration(i) * 40 * time.Millisecond)
				feed(r, w, packets(p, personDoc(100+i, at), tt.newTS+uint32(i*3600)), at)
			}
			if before != 20 {
				t.Fatalf("%d documents before the restart", before)
			}
			if diff := cmp.Diff(ids(100, 101, 102, 103, 104), detectionIDs(s.take())); diff != "" {
				t.Errorf("after restart (-want +got)\n%s", diff)
			}
			ss, _ := r.Stream(SSRC(camID))
			if ss.Restarts != 1 {
				t.Errorf("restarts = %d, want 1", ss.Restarts)
			}
			// Every packet arrived exactly on its timestamp's time.
			if j := ss.Report.JitterMs(); j > 0.1 {
				t.Errorf("jitter = %.3f ms, want about 0", j)
			}
			if d := drops(r.Totals()); len(d) != 0 {
				t.Errorf("dropped %v", d)
			}
		})
	}
}
