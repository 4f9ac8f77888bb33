package rules

import (
	"math/bits"
	"slices"
	"time"
	"unsafe"

	"citywatch/event"
)

// CoOccurrenceSpec is a co-occurrence rule: two different keys (plates)
// seen at the same places, each time within Gap of each other, at Places
// or more distinct places within Within (companion vehicles).
//
//	cooccurrence: {key: plate, places: 3, gap: 30s, within: 2h}
//
// Pairs are found without comparing every plate with every other: each
// place keeps its passes of the last moments, so a pass is compared only
// with the plates that passed the same place within Gap; each plate keeps
// its last passes (placeHistory of them) with a 128-bit summary of their
// places (bit = place number mod 128), so that a candidate pair is dismissed
// with two ANDs unless the two plates may share enough places. The test is
// exact: with up to 128 places (a city's checkpoints) k common places set k
// common bits; with more, at least k / ⌈places/128⌉. No per-pair state is
// kept.
type CoOccurrenceSpec struct {
	// Key is plate (default); plates that are not valid are ignored.
	Key string `yaml:"key"`
	// Place is the field that names a place: device (default, the
	// checkpoint) or station.
	Place  string        `yaml:"place"`
	Places int           `yaml:"places"`
	Gap    time.Duration `yaml:"gap"`
	Within time.Duration `yaml:"within"`
	// PlaceCapacity bounds the recent passes a place keeps; at a busy
	// checkpoint it must hold 2×Gap of traffic. Default 1024.
	PlaceCapacity int `yaml:"place_capacity"`
}

// placeHistory is how many passes a plate remembers; a pair needs Places of
// them in common, so Places may not exceed it.
const placeHistory = 8

type coRule struct {
	key      keyField
	place    func(*event.Event) string
	places   int
	gap      int64
	within   int64
	capacity int
}

func (s *CoOccurrenceSpec) compile() (kindSpec, error) {
	k, err := compileKey(s.Key, "plate")
	if err != nil {
		return nil, err
	}
	r := &coRule{key: k, places: s.Places, gap: s.Gap.Milliseconds(), within: s.Within.Milliseconds(), capacity: s.PlaceCapacity}
	switch s.Place {
	case "", "device":
		r.place = stringFields["device_id"]
	case "station":
		r.place = stringFields["station_id"]
	default:
		return nil, &fieldError{field: "place", msg: "must be device or station, got " + quote(s.Place)}
	}
	if r.places == 0 {
		r.places = 3
	}
	if r.places < 2 || r.places > placeHistory {
		return nil, &fieldError{field: "places", msg: "must be 2–8"}
	}
	if err := durationField("gap", s.Gap); err != nil {
		return nil, err
	}
	if err := durationField("within", s.Within); err != nil {
		return nil, err
	}
	if s.Within > 24*24*time.Hour {
		return nil, &fieldError{field: "within", msg: "must be at most 24 days"}
	}
	if r.capacity == 0 {
		r.capacity = 1024
	}
	if r.capacity < 16 || r.capacity > 1<<20 {
		return nil, &fieldError{field: "place_capacity", msg: "must be 16–1048576"}
	}
	return r, nil
}

func (r *coRule) window() time.Duration { return time.Duration(r.within) * time.Millisecond }

func (r *coRule) newState(cfg *Config) kindState {
	return &coState{r: r, plates: newTable[history](cfg.MaxKeys), placeIndex: map[string]int32{}, maxPlaces: cfg.MaxKeys}
}

// history is one plate's last passes, oldest first: 72 bytes. Times are
// kept as milliseconds after base, which the window (at most 24 days)
// keeps within int32.
type history struct {
	gen   uint32 // tells a reused table entry from the plate a pass named
	n     uint8
	mask  [2]uint64 // bit place%128 of every pass held
	base  int64
	dt    [placeHistory]int32
	place [placeHistory]int32
}

func (h *history) at(i int) int64 { return h.base + int64(h.dt[i]) }

// pass is one recent pass at a place.
type pass struct {
	t     int64
	plate int32 // entry in the plates table
	gen   uint32
	id    []byte
}

// place is one place's ring of recent passes.
type place struct {
	name  string
	ring  []pass
	next  int // where the next pass goes
	count int
}

type coState struct {
	r      *coRule
	plates *table[history]
	// sums mirrors each plates entry's place mask, by entry index: 16
	// bytes where the entry takes about 120, so that the scan of a busy
	// place's passes, which reads one entry for each, stays in the
	// cache. A mask may hold bits its entry has since dropped (an expired
	// pass, a deleted or reused entry): it only ever rules candidates out
	// when the entry's own mask would too.
	sums       []coSum
	places     []place
	placeIndex map[string]int32
	maxPlaces  int
	gen        uint32
	heap       int
	common     [placeHistory]int32
}

func (s *coState) size() (int, int, uint64) {
	return s.plates.len(), s.plates.bytes() + s.heap, s.plates.evicted
}

func (s *coState) tick(x *evalCtx) {
	s.plates.expire(x.wm()-s.r.within, nil)
}

func (h *history) setBit(p int32) { h.mask[(p>>6)&1] |= 1 << (p & 63) }

// coSum is what the scan of a place's passes reads of a plate first: its
// place mask.
type coSum [2]uint64

// common returns the place bits h and the summed entry share.
func (c *coSum) common(h *history) int {
	return bits.OnesCount64(c[0]&h.mask[0]) + bits.OnesCount64(c[1]&h.mask[1])
}

func commonBits(a, b *history) int {
	return bits.OnesCount64(a.mask[0]&b.mask[0]) + bits.OnesCount64(a.mask[1]&b.mask[1])
}

func (s *coState) placeOf(name string) (int32, bool) {
	if i, ok := s.placeIndex[name]; ok {
		return i, true
	}
	if len(s.places) >= s.maxPlaces {
		return 0, false
	}
	i := int32(len(s.places))
	s.places = append(s.places, place{name: cloneString(name), ring: make([]pass, s.r.capacity)})
	s.placeIndex[s.places[i].name] = i
	s.heap += s.r.capacity*int(unsafe.Sizeof(pass{})) + len(name) + 64
	return i, true
}

func (s *coState) process(x *evalCtx, e *event.Event) {
	r := s.r
	key := r.key.get(e)
	if key == "" || r.key.name == "plate" && !e.PlateValid {
		return
	}
	pi, ok := s.placeOf(r.place(e))
	if !ok {
		return
	}
	t := e.Time.UnixMilli()
	self, added := s.plates.touchEntry(key, t)
	h := &s.plates.nodes[self].val
	if added {
		s.gen++
		*h = history{gen: s.gen}
	}
	h.add(t, pi, t-r.within)
	if int(self) >= len(s.sums) {
		c := cap(s.sums)
		s.sums = append(s.sums, make([]coSum, int(self)+1-len(s.sums))...)
		s.heap += (cap(s.sums) - c) * int(unsafe.Sizeof(coSum{}))
	}
	s.sums[self] = h.mask

	pl := &s.places[pi]
	// Places sharing a bit: k common places set at least need common bits.
	perBit := (len(s.places) + 127) / 128
	need := (r.places + perBit - 1) / perBit
	if int(h.n) >= r.places && commonBits(h, h) >= need {
		// Compare with the plates that passed here within gap.
		for k := 0; k < pl.count; k++ {
			j := (pl.next - 1 - k + len(pl.ring)) % len(pl.ring)
			p := &pl.ring[j]
			if p.t < t-r.gap-x.cfg().Lateness.Milliseconds() {
				break
			}
			if p.plate == self || p.t > t+r.gap || p.t < t-r.gap {
				continue
			}
			if s.sums[p.plate].common(h) < need {
				continue
			}
			other := &s.plates.nodes[p.plate]
			if other.val.gen != p.gen || other.key == "" {
				continue
			}
			if commonBits(h, &other.val) < need {
				continue
			}
			if n := s.commonPlaces(h, &other.val, t); n >= r.places {
				s.raise(x, e, key, other.key, p, n)
			}
		}
	}
	// Remember this pass at the place.
	p := &pl.ring[pl.next]
	before := cap(p.id)
	p.t, p.plate, p.gen = t, self, h.gen
	p.id = append(p.id[:0], e.ID...)
	s.heap += cap(p.id) - before
	pl.next = (pl.next + 1) % len(pl.ring)
	if pl.count < len(pl.ring) {
		pl.count++
	}
}

// add records a pass, dropping passes older than cutoff and, when full,
// the oldest.
func (h *history) add(t int64, p int32, cutoff int64) {
	var ts [placeHistory]int64
	var ps [placeHistory]int32
	n := 0
	for i := range int(h.n) {
		if at := h.at(i); at >= cutoff && !(h.place[i] == p && at == t) {
			ts[n], ps[n] = at, h.place[i]
			n++
		}
	}
	if n == placeHistory {
		copy(ts[:], ts[1:])
		copy(ps[:], ps[1:])
		n--
	}
	// Keep time order.
	i := n
	for i > 0 && ts[i-1] > t {
		ts[i], ps[i] = ts[i-1], ps[i-1]
		i--
	}
	ts[i], ps[i] = t, p
	n++
	h.n = uint8(n)
	h.base = ts[0]
	h.mask = [2]uint64{}
	for i := range n {
		h.dt[i] = int32(ts[i] - h.base)
		h.place[i] = ps[i]
		h.setBit(ps[i])
	}
}

// commonPlaces counts the distinct places where both plates passed within
// gap of each other, with every pass within the rule's window before t;
// the places are left in s.common.
func (s *coState) commonPlaces(a, b *history, t int64) int {
	n := 0
	lo := t - s.r.within
	for i := range int(a.n) {
		pa, ta := a.place[i], a.at(i)
		if ta < lo || slices.Contains(s.common[:n], pa) {
			continue
		}
		for j := range int(b.n) {
			tb := b.at(j)
			if b.place[j] != pa || tb < lo {
				continue
			}
			if d := ta - tb; d <= s.r.gap && d >= -s.r.gap {
				s.common[n] = pa
				n++
				break
			}
		}
	}
	return n
}

func (s *coState) raise(x *evalCtx, e *event.Event, a, b string, p *pass, n int) {
	first, second := a, b
	if second < first {
		first, second = second, first
	}
	places := make([]string, n)
	for i := range n {
		places[i] = s.places[s.common[i]].name
	}
	x.raise(&hit{
		subject:  event.Subject{Kind: event.SubjectPair, ID: first + "|" + second},
		e:        e,
		evidence: []string{string(p.id), e.ID},
		details: []event.Detail{
			{Name: "plates", Value: []string{first, second}},
			{Name: "places", Value: n},
			{Name: "place_ids", Value: places},
			{Name: "gap_s", Value: roundTo(float64(abs64(e.Time.UnixMilli()-p.t))/1000, 1)},
		},
	})
}

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}
