package main

import (
	"strings"
	"testing"
	"time"
)

func TestSoakJudge(t *testing.T) {
	const mib = 1 << 20
	// run makes a sample every 5 s of a 4-minute run, with the live heap
	// and goroutines of the second and the last quarter given.
	run := func(heap2, heap4 uint64, g2, g4 int) []soakSample {
		var ss []soakSample
		for at := 5 * time.Second; at <= 4*time.Minute; at += 5 * time.Second {
			s := soakSample{at: at, heapLive: heap2, goroutines: g2}
			if at > 3*time.Minute {
				s.heapLive, s.goroutines = heap4, g4
			}
			ss = append(ss, s)
		}
		return ss
	}
	// dedupeFills is a run whose heap grows by what ingest's dedupe cache
	// takes while it fills from 100,000 to 500,000 ids, and by 5 % more.
	dedupeFills := run(200*mib, 200*mib, 900, 900)
	for i := range dedupeFills {
		s := &dedupeFills[i]
		s.dedupe = 100_000
		if s.at > 3*time.Minute {
			s.dedupe = 500_000
			s.heapLive = uint64(float64(200*mib-100_000*soakDedupeEntryBytes)*1.05) + 500_000*soakDedupeEntryBytes
		}
	}
	for _, tc := range []struct {
		name     string
		samples  []soakSample
		d        time.Duration
		problems []string
	}{
		{"flat", run(200*mib, 200*mib, 900, 900), 4 * time.Minute, nil},
		{"within tolerance", run(200*mib, 235*mib, 900, 990), 4 * time.Minute, nil},
		{"heap growing", run(200*mib, 240*mib, 900, 900), 4 * time.Minute, []string{"heap growing"}},
		{"goroutines growing", run(200*mib, 200*mib, 900, 991), 4 * time.Minute, []string{"goroutines growing"}},
		{"dedupe cache filling", dedupeFills, 4 * time.Minute, nil},
		{"few goroutines", run(200*mib, 200*mib, 20, 30), 4 * time.Minute, nil},
		{"too short", run(200*mib, 200*mib, 900, 900)[:2], 4 * time.Minute, []string{"too short to judge flatness"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := soakJudge(tc.samples, tc.d)
			if strings.Join(v.problems, ";") != strings.Join(tc.problems, ";") {
				t.Errorf("problems %q, want %q\n%s", v.problems, tc.problems, v.text)
			}
		})
	}
}

func TestSoakPct(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, ms(i))
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, ms(51)}, {0.99, ms(100)}, {1, ms(100)}} {
		if got := soakPct(lat, tc.q); got != tc.want {
			t.Errorf("soakPct(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := soakPct(nil, 0.5); got != 0 {
		t.Errorf("soakPct of nothing = %v, want 0", got)
	}
}
