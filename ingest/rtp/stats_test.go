package rtp

import (
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The expected figures below are worked out by hand from RFC 3550
// appendix A.1 (probation: the first packet is not counted and the second
// is the base), A.3 (expected = extended max - base + 1, lost = expected
// - received, fraction = lost*256/expected) and A.8.
func TestStatsRFC3550(t *testing.T) {
	type want struct {
		Report                Report
		Dups, Reord, Restarts uint64
		IntervalExp           uint32
		IntervalLost          int64
		Fraction              uint8
	}
	tests := []struct {
		name string
		seqs []uint16
		want want
	}{
		{"in order", []uint16{100, 101, 102, 103, 104, 105, 106, 107, 108, 109},
			want{Report: Report{ExtendedMax: 109, Expected: 9, Received: 9}, IntervalExp: 9}},
		{"two lost", []uint16{100, 101, 102, 104, 105, 107, 108, 109, 110},
			// base 101, max 110: expected 10, received 8; fraction 2*256/10 = 51.
			want{Report: Report{ExtendedMax: 110, Expected: 10, Received: 8, Lost: 2}, IntervalExp: 10, IntervalLost: 2, Fraction: 51}},
		{"reordered", []uint16{100, 101, 102, 104, 103, 105},
			want{Report: Report{ExtendedMax: 105, Expected: 5, Received: 5}, Reord: 1, IntervalExp: 5}},
		{"duplicate of the highest", []uint16{100, 101, 102, 102, 103},
			// duplicates count as received (A.3), so lost is -1 and the fraction 0.
			want{Report: Report{ExtendedMax: 103, Expected: 3, Received: 4, Lost: -1}, Dups: 1, IntervalExp: 3, IntervalLost: -1}},
		{"duplicate of an older one", []uint16{100, 101, 102, 103, 101},
			want{Report: Report{ExtendedMax: 103, Expected: 3, Received: 4, Lost: -1}, Dups: 1, IntervalExp: 3, IntervalLost: -1}},
		{"wrap", []uint16{65533, 65534, 65535, 0, 1, 2},
			// cycles 65536: extended max 65538, base 65534, expected 5.
			want{Report: Report{ExtendedMax: 65538, Expected: 5, Received: 5}, IntervalExp: 5}},
		{"wrap with loss", []uint16{65533, 65534, 65535, 1, 2},
			want{Report: Report{ExtendedMax: 65538, Expected: 5, Received: 4, Lost: 1}, IntervalExp: 5, IntervalLost: 1, Fraction: 51}},
		{"restart", []uint16{100, 101, 102, 103, 104, 105, 40000, 40001, 40002},
			// 40000 is a jump beyond MAX_DROPOUT: not counted, bad_seq = 40001;
			// 40001 re-initialises (base 40001), 40002 follows.
			want{Report: Report{ExtendedMax: 40002, Expected: 2, Received: 2}, Restarts: 1, IntervalExp: 2}},
		{"stray packet is not a restart", []uint16{100, 101, 102, 9000, 103, 104},
			want{Report: Report{ExtendedMax: 104, Expected: 4, Received: 4}, IntervalExp: 4}},
		{"misordered beyond MAX_MISORDER is a jump", []uint16{1000, 1001, 1002, 850, 1003},
			// 1002-850 = 152 > MAX_MISORDER: treated as a jump, not counted.
			want{Report: Report{ExtendedMax: 1003, Expected: 3, Received: 3}, IntervalExp: 3}},
		{"probation restarts on a gap", []uint16{10, 12, 13, 14},
			// 10 then 12 (not 11): probation again from 12; 13 ends it (base 13).
			want{Report: Report{ExtendedMax: 14, Expected: 2, Received: 2}, IntervalExp: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Stats
			for i, q := range tt.seqs {
				s.Update(q, uint32(i)*3000, uint32(i)*3000)
			}
			exp, lost, frac := s.Interval()
			got := want{Report: s.Report(), Dups: s.Duplicates, Reord: s.Reordered, Restarts: s.Restarts,
				IntervalExp: exp, IntervalLost: lost, Fraction: frac}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
			// A second interval with nothing new is empty.
			if exp, lost, frac := s.Interval(); exp != 0 || lost != 0 || frac != 0 {
				t.Errorf("empty interval = %d, %d, %d", exp, lost, frac)
			}
		})
	}
}

func TestStatsJitter(t *testing.T) {
	// ts every 3000 units; arrivals 1000, 4000, 7100, 9900, 13000.
	// The first packet is on probation. Transits: 1000 (p2), 1100, 900,
	// 1000 → d = 100, 200, 100 → J = 6.25, then 6.25+(200-6.25)/16 =
	// 18.359375, then 18.359375+(100-18.359375)/16 = 23.4619140625.
	var s Stats
	arr := []uint32{1000, 4000, 7100, 9900, 13000}
	for i, a := range arr {
		s.Update(uint16(10+i), uint32(i)*3000, a)
	}
	r := s.Report()
	if r.Jitter != 23.4619140625 {
		t.Errorf("jitter = %v, want 23.4619140625", r.Jitter)
	}
	if ms := r.JitterMs(); math.Abs(ms-23.4619140625/90) > 1e-12 {
		t.Errorf("jitter ms = %v", ms)
	}
}

func TestStatsSinceRestart(t *testing.T) {
	var s Stats
	var p Prior
	for q := uint16(0); q < 50; q++ {
		s.Update(q, 0, 0)
	}
	if exp, lost, _ := s.Since(&p); exp != 49 || lost != 0 {
		t.Fatalf("first window %d %d", exp, lost)
	}
	s.Update(30000, 0, 0)
	s.Update(30001, 0, 0)
	s.Update(30003, 0, 0)
	// After the restart the window starts afresh: base 30001, max 30003.
	if exp, lost, _ := s.Since(&p); exp != 3 || lost != 1 {
		t.Fatalf("window after restart %d %d, want 3 1", exp, lost)
	}
}

// TestStatsJitterRestart: a re-synchronisation (A.1) does not take the
// jump between the old and the new timestamps for network jitter.
func TestStatsJitterRestart(t *testing.T) {
	tests := []struct {
		name         string
		newSeq       uint16
		newTS        uint32
		wantRestarts uint64
	}{
		{"sequence and timestamp jump forward", 40000, 1 << 31, 1},
		{"sequence jumps back, timestamp forward", 5, 1 << 30, 1},
		{"timestamp jumps back", 20000, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Stats
			// Arrivals exactly on time: no jitter before the restart.
			for i := range 50 {
				s.Update(uint16(1000+i), 500_000+uint32(i)*3000, 9_000_000+uint32(i)*3000)
			}
			for i := range 50 {
				s.Update(tt.newSeq+uint16(i), tt.newTS+uint32(i)*3000, 9_300_000+uint32(i)*3000)
			}
			if s.Restarts != tt.wantRestarts {
				t.Fatalf("restarts = %d, want %d", s.Restarts, tt.wantRestarts)
			}
			if j := s.Report().Jitter; j != 0 {
				t.Errorf("jitter = %v timestamp units, want 0", j)
			}
		})
	}
}
