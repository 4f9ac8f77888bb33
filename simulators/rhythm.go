package simulators

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"citywatch/internal/city"
)

// Rhythm is a daily profile: a rate multiplier for each hour of the local
// day, linearly interpolated between hour midpoints, with a mean of 1 over
// the day so that a configured rate is the daily mean.
type Rhythm [24]float64

func normalised(r Rhythm) Rhythm {
	s := 0.0
	for _, v := range r {
		s += v
	}
	for i := range r {
		r[i] *= 24 / s
	}
	return r
}

// The profiles of the city's activity.
var (
	// rhythmStreet: quiet at night, peaks at the commuting hours.
	rhythmStreet = normalised(Rhythm{0.15, 0.1, 0.08, 0.08, 0.12, 0.3, 0.8, 1.8, 1.9, 1.3, 1.1, 1.2, 1.3, 1.1, 1.1, 1.2, 1.4, 1.9, 2.0, 1.5, 1.2, 0.9, 0.5, 0.3})
	// rhythmMarket: crowds in the evening.
	rhythmMarket = normalised(Rhythm{0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 0.7, 1.0, 1.1, 1.2, 1.3, 1.4, 1.4, 1.2, 1.2, 1.3, 1.5, 1.9, 2.4, 2.6, 2.4, 1.8, 0.8, 0.3})
	// rhythmStation: transport hubs, busy from early morning to late evening.
	rhythmStation = normalised(Rhythm{0.3, 0.15, 0.1, 0.1, 0.3, 0.8, 1.4, 1.7, 1.6, 1.3, 1.2, 1.2, 1.3, 1.2, 1.2, 1.3, 1.5, 1.8, 1.9, 1.8, 1.5, 1.2, 0.8, 0.5})
	// rhythmResidential: mornings and evenings.
	rhythmResidential = normalised(Rhythm{0.2, 0.1, 0.08, 0.08, 0.15, 0.5, 1.3, 1.6, 1.2, 0.9, 0.8, 0.9, 1.0, 0.8, 0.8, 0.9, 1.1, 1.5, 1.8, 1.8, 1.5, 1.1, 0.6, 0.35})
	// rhythmZone: schools and offices, daytime only.
	rhythmZone = normalised(Rhythm{0.05, 0.05, 0.05, 0.05, 0.05, 0.1, 0.6, 2.2, 2.0, 1.6, 1.6, 1.8, 1.6, 1.6, 1.8, 1.9, 2.0, 1.8, 0.8, 0.4, 0.3, 0.2, 0.1, 0.05})
	// rhythmTraffic: road traffic.
	rhythmTraffic = normalised(Rhythm{0.25, 0.15, 0.12, 0.12, 0.2, 0.5, 1.2, 2.0, 1.8, 1.3, 1.1, 1.1, 1.2, 1.1, 1.1, 1.2, 1.4, 1.9, 1.9, 1.4, 1.1, 0.9, 0.6, 0.4})
	// rhythmFuel: fuel sales.
	rhythmFuel = normalised(Rhythm{0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 1.0, 1.4, 1.4, 1.3, 1.3, 1.3, 1.3, 1.2, 1.2, 1.3, 1.5, 1.7, 1.6, 1.4, 1.2, 1.0, 0.6, 0.4})
)

// At returns the multiplier at t.
func (r *Rhythm) At(t time.Time) float64 {
	t = t.In(city.Location)
	h := float64(t.Hour()) + float64(t.Minute())/60 + float64(t.Second())/3600 - 0.5
	if h < 0 {
		h += 24
	}
	i := int(h)
	f := h - float64(i)
	return r[i%24]*(1-f) + r[(i+1)%24]*f
}

// Max returns the largest multiplier.
func (r *Rhythm) Max() float64 {
	m := 0.0
	for _, v := range r {
		m = math.Max(m, v)
	}
	return m
}

// Integral returns ∫ multiplier dt over [from, to) in seconds, to one
// second's resolution; tests use it for the expected count of a run.
func (r *Rhythm) Integral(from, to time.Time) float64 {
	s := 0.0
	for t := from; t.Before(to); t = t.Add(time.Second) {
		s += r.At(t.Add(500 * time.Millisecond))
	}
	return s
}

// poisson draws the arrival times of a Poisson process whose rate is
// base × rhythm(t) events per second, by thinning: candidates come at the
// peak rate and each is kept with probability rate(t)/peak. Its arrivals
// are exactly a non-homogeneous Poisson process, so counts over a run
// match the integral of the rate.
type poisson struct {
	base   float64 // events per second at multiplier 1
	rhythm *Rhythm
	peak   float64
	rng    *rand.Rand
	next   time.Time
	n      uint64 // arrivals so far
}

func newPoisson(base float64, r *Rhythm, rng *rand.Rand, start time.Time) *poisson {
	p := &poisson{base: base, rhythm: r, peak: base * r.Max(), rng: rng, next: start}
	p.advance()
	return p
}

// advance moves next to the following arrival.
func (p *poisson) advance() {
	if p.peak <= 0 {
		p.next = p.next.Add(1 << 62)
		return
	}
	for {
		p.next = p.next.Add(durationOf(p.rng.ExpFloat64() / p.peak))
		if p.rng.Float64()*p.peak <= p.base*p.rhythm.At(p.next) {
			return
		}
	}
}

// until calls f for each arrival at or before now, in order.
func (p *poisson) until(now time.Time, f func(t time.Time)) {
	for !p.next.After(now) {
		t := p.next
		p.n++
		f(t)
		p.advance()
	}
}

// ticker fires for each of a set of devices once per period, each at its
// own phase, in time order: heartbeats, telemetry, position reports.
type ticker struct {
	period time.Duration
	phase  []time.Duration // sorted, in [0, period)
	who    []int           // device index for each phase
	cycle  time.Time       // start of the current period
	pos    int
}

// newTicker returns a ticker over devices 0…len(phase)-1 whose first period
// starts at start.
func newTicker(period time.Duration, phases []time.Duration, start time.Time) *ticker {
	t := &ticker{period: period, cycle: start}
	idx := make([]int, len(phases))
	for i := range idx {
		idx[i] = i
	}
	sortByPhase(idx, phases)
	for _, i := range idx {
		t.phase = append(t.phase, phases[i])
		t.who = append(t.who, i)
	}
	return t
}

func sortByPhase(idx []int, phases []time.Duration) {
	slices.SortFunc(idx, func(a, b int) int {
		if c := cmp.Compare(phases[a], phases[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
}

// until calls f for every tick at or before now.
func (t *ticker) until(now time.Time, f func(i int, at time.Time)) {
	if len(t.phase) == 0 {
		return
	}
	for {
		at := t.cycle.Add(t.phase[t.pos])
		if at.After(now) {
			return
		}
		f(t.who[t.pos], at)
		t.pos++
		if t.pos == len(t.phase) {
			t.pos = 0
			t.cycle = t.cycle.Add(t.period)
		}
	}
}
