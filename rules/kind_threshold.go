package rules

import (
	"time"
	"unsafe"

	"citywatch/event"
)

// ThresholdSpec is a threshold rule: per key, over a sliding event-time
// window, the number of events, the number of distinct values of a field,
// or the sum of a figure reaches a limit. With several limits the rule
// raises when any is reached.
//
//	threshold:
//	  key: buyer
//	  window: 24h
//	  count: 3                                 # 3 or more events
//	  distinct: {field: station_id, count: 2}  # or 2 or more stations
//	  sum: {field: volume_l, value: 100}       # or 100 L or more
type ThresholdSpec struct {
	// Key is device (default), plate, buyer or station.
	Key      string        `yaml:"key"`
	Window   time.Duration `yaml:"window"`
	Count    int           `yaml:"count"`
	Distinct *DistinctSpec `yaml:"distinct"`
	Sum      *SumSpec      `yaml:"sum"`
}

// DistinctSpec is a limit on the distinct values of a field in the window.
type DistinctSpec struct {
	Field string `yaml:"field"`
	Count int    `yaml:"count"`
}

// SumSpec is a limit on the sum of a figure in the window.
type SumSpec struct {
	Field string  `yaml:"field"`
	Value float64 `yaml:"value"`
}

// maxThresholdCount bounds the count limits; a key keeps at least this
// many events of its window when a limit needs it.
const maxThresholdCount = 1 << 16

type thresholdRule struct {
	key           keyField
	span          int64 // window, ms
	count         int
	distinct      int
	distinctField func(*event.Event) string
	distinctName  string
	sum           float64
	sumField      func(*event.Event) float64
	sumName       string
}

func (s *ThresholdSpec) compile() (kindSpec, error) {
	k, err := compileKey(s.Key, "device")
	if err != nil {
		return nil, err
	}
	if err := durationField("window", s.Window); err != nil {
		return nil, err
	}
	r := &thresholdRule{key: k, span: s.Window.Milliseconds(), count: s.Count}
	if s.Count < 0 || s.Count > maxThresholdCount {
		return nil, &fieldError{field: "count", msg: "must be 1–65536"}
	}
	if d := s.Distinct; d != nil {
		f, ok := stringFields[d.Field]
		if !ok {
			return nil, &fieldError{field: "distinct.field", msg: "must be one of " + names(stringFields) + ", got " + quote(d.Field)}
		}
		if d.Count < 1 || d.Count > maxThresholdCount {
			return nil, &fieldError{field: "distinct.count", msg: "must be 1–65536"}
		}
		r.distinct, r.distinctField, r.distinctName = d.Count, f, d.Field
	}
	if sm := s.Sum; sm != nil {
		f, ok := numberFields[sm.Field]
		if !ok {
			return nil, &fieldError{field: "sum.field", msg: "must be one of " + names(numberFields) + ", got " + quote(sm.Field)}
		}
		if !(sm.Value > 0) {
			return nil, &fieldError{field: "sum.value", msg: "must be positive"}
		}
		r.sum, r.sumField, r.sumName = sm.Value, f, sm.Field
	}
	if r.count == 0 && r.distinct == 0 && r.sumField == nil {
		return nil, &fieldError{field: "count", msg: "a threshold needs count, distinct or sum"}
	}
	return r, nil
}

func (r *thresholdRule) window() time.Duration { return time.Duration(r.span) * time.Millisecond }

func (r *thresholdRule) newState(cfg *Config) kindState {
	limit := max(cfg.MaxWindowEvents, r.count, r.distinct)
	return &thresholdState{r: r, keys: newTable[window](cfg.MaxKeys), limit: limit}
}

// window holds one key's events in the rule's window, sorted by event
// time. Entries beyond len keep their id buffers for reuse.
type window struct {
	ents []wEntry
}

type wEntry struct {
	t  int64
	v  float64
	h  uint64 // hash of the distinct field
	id []byte
}

type thresholdState struct {
	r     *thresholdRule
	keys  *table[window]
	limit int
	heap  int // bytes of entries and id buffers, estimated
}

func (s *thresholdState) size() (int, int, uint64) {
	return s.keys.len(), s.keys.bytes() + s.heap, s.keys.evicted
}

func (s *thresholdState) tick(x *evalCtx) {
	// A key whose newest event has left the window can never contribute
	// to a window with an event that is not late.
	s.keys.expire(x.wm()-s.r.span, func(_ string, _ int64, w *window) bool {
		s.heap -= w.bytes()
		return false
	})
}

func (w *window) bytes() int {
	n := cap(w.ents) * int(unsafe.Sizeof(wEntry{}))
	for _, e := range w.ents[:cap(w.ents)] {
		n += cap(e.id)
	}
	return n
}

func (s *thresholdState) process(x *evalCtx, e *event.Event) {
	r := s.r
	key := r.key.get(e)
	if key == "" {
		return
	}
	t := e.Time.UnixMilli()
	w, _ := s.keys.touch(key, t)
	before := w.bytes()
	// Drop what cannot share a window with an event that is not late.
	cut := x.wm() - r.span
	n := 0
	for n < len(w.ents) && w.ents[n].t < cut {
		n++
	}
	w.drop(n)
	// A resent event (same id and time) is not counted twice.
	for i := range w.ents {
		if w.ents[i].t == t && string(w.ents[i].id) == e.ID {
			return
		}
	}
	if len(w.ents) >= s.limit {
		w.drop(1)
	}
	var v float64
	var h uint64
	if r.sumField != nil {
		v = r.sumField(e)
	}
	if r.distinctField != nil {
		h = hashString(r.distinctField(e))
	}
	p := w.insert(t, v, h, e.ID)
	s.heap += w.bytes() - before

	// Every window that contains the new event starts at an event in
	// [t-window, t]; try each, earliest first.
	lo := p
	for lo > 0 && w.ents[lo-1].t >= t-r.span {
		lo--
	}
	for i := lo; i <= p; i++ {
		end := w.ents[i].t + r.span
		j := p
		for j+1 < len(w.ents) && w.ents[j+1].t <= end {
			j++
		}
		if d, ok := s.reached(w.ents[i : j+1]); ok {
			s.raise(x, e, key, w.ents[i:j+1], d)
			return
		}
	}
}

// reached reports whether the events of one window reach a limit, with
// the figures for the alert.
func (s *thresholdState) reached(ents []wEntry) ([]event.Detail, bool) {
	r := s.r
	count := len(ents)
	var sum float64
	distinct := 0
	if r.sumField != nil {
		for _, en := range ents {
			sum += en.v
		}
	}
	if r.distinctField != nil {
		for i, en := range ents {
			seen := false
			for _, prev := range ents[:i] {
				if prev.h == en.h {
					seen = true
					break
				}
			}
			if !seen {
				distinct++
			}
		}
	}
	ok := r.count > 0 && count >= r.count ||
		r.distinct > 0 && distinct >= r.distinct ||
		r.sumField != nil && sum >= r.sum
	if !ok {
		return nil, false
	}
	d := []event.Detail{{Name: "count", Value: count}}
	if r.distinctField != nil {
		d = append(d, event.Detail{Name: "distinct_" + r.distinctName, Value: distinct})
	}
	if r.sumField != nil {
		d = append(d, event.Detail{Name: "sum_" + r.sumName, Value: roundTo(sum, 3)})
	}
	d = append(d, event.Detail{Name: "window_s", Value: int(r.span / 1000)})
	return d, true
}

func (s *thresholdState) raise(x *evalCtx, e *event.Event, key string, ents []wEntry, d []event.Detail) {
	if len(ents) > event.MaxEvidence {
		ents = ents[len(ents)-event.MaxEvidence:]
	}
	ev := make([]string, 0, len(ents)+1)
	for _, en := range ents {
		ev = append(ev, string(en.id))
	}
	// The event that completed the window comes last.
	for i, id := range ev {
		if id == e.ID {
			ev = append(append(ev[:i:i], ev[i+1:]...), e.ID)
			break
		}
	}
	x.raise(&hit{subject: event.Subject{Kind: s.r.key.subject, ID: key}, e: e, evidence: ev, details: d})
}

// drop removes the n oldest entries, keeping their id buffers.
func (w *window) drop(n int) {
	if n <= 0 {
		return
	}
	m := len(w.ents)
	for i := n; i < m; i++ {
		w.ents[i-n], w.ents[i] = w.ents[i], w.ents[i-n]
	}
	w.ents = w.ents[:m-n]
}

// insert adds an entry in time order and returns its index.
func (w *window) insert(t int64, v float64, h uint64, id string) int {
	n := len(w.ents)
	if n < cap(w.ents) {
		w.ents = w.ents[:n+1]
	} else {
		w.ents = append(w.ents, wEntry{})
	}
	en := &w.ents[n]
	en.t, en.v, en.h = t, v, h
	en.id = append(en.id[:0], id...)
	p := n
	for p > 0 && w.ents[p-1].t > t {
		w.ents[p-1], w.ents[p] = w.ents[p], w.ents[p-1]
		p--
	}
	return p
}

// hashString is FNV-1a, 64 bits.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
