package rules

import (
	"slices"
	"time"

	"citywatch/event"
)

// AbsenceSpec is an absence rule: a key that has been heard falls silent
// for a duration of stream time (a device offline, a drone's link lost).
//
//	absence:
//	  key: device
//	  for: 5m
//	  group: {min_devices: 3, fraction: 0.5, wait: 30s}
//
// One alert is raised per outage and resolved when the key is heard again
// (after Recover, if set: hysteresis against a flapping link). With Group,
// devices are grouped by site (Config.Site): when at least MinDevices of a
// site and at least Fraction of its devices are silent, one site alert
// (subject area) stands for all of them and their own alerts are
// inhibited. A silent device waits Wait before its own alert is raised, so
// that the devices of a site that fail together are seen together (a
// device alone in its site, or whose site's other devices are silent too
// or were heard more than Wait after it, does not wait). The
// site alert resolves when fewer than MinDevices, or less than half of
// Fraction, of its devices are still silent; those still silent then get
// their own alerts once they have had Wait to come back as well: a site's
// devices come back one by one, each at its next heartbeat.
//
// Keys are learnt from the stream: a device is watched from its first
// event on. A key silent for Forget is no longer watched (its alert, if
// open, is resolved with "forgotten": true).
type AbsenceSpec struct {
	// Key is device (default) or station.
	Key     string        `yaml:"key"`
	For     time.Duration `yaml:"for"`
	Recover time.Duration `yaml:"recover"`
	// Until is an expression: an event of the key that satisfies it ends
	// the watch (a drone that landed), resolving any open alert.
	Until  string        `yaml:"until"`
	Forget time.Duration `yaml:"forget"`
	Group  *GroupSpec    `yaml:"group"`
}

// GroupSpec groups the silence of many devices of one site.
type GroupSpec struct {
	MinDevices int           `yaml:"min_devices"`
	Fraction   float64       `yaml:"fraction"`
	Wait       time.Duration `yaml:"wait"`
	// Summary is the template of the site alert's summary, with {site},
	// {silent_devices}, {devices} and {device_ids}; default the rule's.
	Summary string `yaml:"summary"`
}

// DefaultForget is how long an absence rule watches a silent key.
const DefaultForget = 7 * 24 * time.Hour

type absenceRule struct {
	key        keyField
	silence    int64 // ms
	recover    int64
	forget     int64
	until      *filter
	group      bool
	minDevices int
	fraction   float64
	wait       int64
	summary    *template
}

func (s *AbsenceSpec) compile() (kindSpec, error) {
	k, err := compileKey(s.Key, "device")
	if err != nil {
		return nil, err
	}
	if err := durationField("for", s.For); err != nil {
		return nil, err
	}
	if s.Recover < 0 {
		return nil, &fieldError{field: "recover", msg: "must not be negative"}
	}
	r := &absenceRule{key: k, silence: s.For.Milliseconds(), recover: s.Recover.Milliseconds(), forget: s.Forget.Milliseconds()}
	if r.forget == 0 {
		r.forget = DefaultForget.Milliseconds()
	}
	if r.forget <= r.silence {
		return nil, &fieldError{field: "forget", msg: "must be longer than for"}
	}
	if r.until, err = compileFilter(s.Until); err != nil {
		return nil, &fieldError{field: "until", msg: oneLine(err.Error())}
	}
	if g := s.Group; g != nil {
		r.group = true
		r.minDevices, r.fraction, r.wait = g.MinDevices, g.Fraction, g.Wait.Milliseconds()
		if r.minDevices == 0 {
			r.minDevices = 3
		}
		if r.fraction == 0 {
			r.fraction = 0.5
		}
		if g.Summary != "" {
			t, err := parseTemplate(g.Summary)
			if err != nil {
				return nil, &fieldError{field: "group.summary", msg: err.Error()}
			}
			r.summary = &t
		}
		switch {
		case r.minDevices < 2:
			return nil, &fieldError{field: "group.min_devices", msg: "must be ≥ 2"}
		case r.fraction <= 0 || r.fraction > 1:
			return nil, &fieldError{field: "group.fraction", msg: "must be in (0, 1]"}
		case r.wait < 0:
			return nil, &fieldError{field: "group.wait", msg: "must not be negative"}
		}
	}
	return r, nil
}

func (r *absenceRule) window() time.Duration { return time.Duration(r.silence) * time.Millisecond }

func (r *absenceRule) newState(cfg *Config) kindState {
	s := &absenceState{r: r, keys: newTable[watch](cfg.MaxKeys), siteIndex: map[string]int32{}}
	s.keys.onEvict = func(key string, w *watch) {
		if w.state == alerted && s.x != nil {
			s.x.resolve(s.subject(key), nil, []event.Detail{{Name: "forgotten", Value: true}})
		}
		s.leave(key, w)
		s.heap -= cap(w.id)
	}
	return s
}

// Watch states of a key.
const (
	alive     uint8 = iota
	pending         // silent, its own alert waits for the group decision
	alerted         // silent, its own alert is open
	inhibited       // silent, covered by its site's alert
)

// watch is one watched key.
type watch struct {
	last      int64 // newest event time
	backSince int64 // first event after an outage, for Recover
	hold      int64 // watermark before which a pending key raises nothing (its site just came back)
	lat, lon  float32
	state     uint8
	site      int32 // index in sites, -1 when ungrouped
	id        []byte
}

type site struct {
	name    string
	members []string // keys of the site's devices
	total   int
	silent  int
	alerted bool // the site alert is open
	changed bool // silent devices joined the open site alert this tick
	dirty   bool // on the dirty list
}

type absenceState struct {
	r         *absenceRule
	keys      *table[watch]
	sites     []site
	siteIndex map[string]int32
	dirty     []int32 // sites to check at the next checkSites
	heap      int
	x         *evalCtx // of the call in progress, for evictions
}

func (s *absenceState) size() (int, int, uint64) {
	return s.keys.len(), s.keys.bytes() + s.heap + len(s.sites)*64, s.keys.evicted
}

// leave takes a key out of its site.
func (s *absenceState) leave(key string, w *watch) {
	if w.site < 0 {
		return
	}
	st := &s.sites[w.site]
	st.total--
	if w.state != alive {
		st.silent--
	}
	if i := slices.Index(st.members, key); i >= 0 {
		st.members = slices.Delete(st.members, i, i+1)
	}
	s.markDirty(w.site)
}

func (s *absenceState) markDirty(i int32) {
	if st := &s.sites[i]; !st.dirty {
		st.dirty = true
		s.dirty = append(s.dirty, i)
	}
}

func (s *absenceState) subject(key string) event.Subject {
	return event.Subject{Kind: s.r.key.subject, ID: key}
}

func (s *absenceState) process(x *evalCtx, e *event.Event) {
	r := s.r
	key := r.key.get(e)
	if key == "" {
		return
	}
	s.x = x
	t := e.Time.UnixMilli()
	if r.until != nil && x.eval(r.until, e) {
		if w, ok := s.keys.get(key); ok {
			if w.state == alerted {
				x.resolve(s.subject(key), e, nil)
			}
			s.leave(key, w)
			s.heap -= cap(w.id)
			s.keys.delete(key)
			s.checkSites(x)
		}
		return
	}
	w, added := s.keys.touch(key, t)
	if added {
		*w = watch{site: -1}
		if r.group {
			w.site = s.siteOf(x, e.DeviceID, e.Lat, e.Lon)
			st := &s.sites[w.site]
			st.total++
			st.members = append(st.members, cloneString(key))
		}
	}
	if t > w.last {
		w.last = t
		w.lat, w.lon = float32(e.Lat), float32(e.Lon)
		before := cap(w.id)
		w.id = append(w.id[:0], e.ID...)
		s.heap += cap(w.id) - before
	}
	if w.state == alive {
		return
	}
	if r.recover > 0 {
		if w.backSince == 0 || t < w.backSince {
			w.backSince = t
		}
		if w.last-w.backSince < r.recover {
			return
		}
	}
	// Back from an outage.
	if w.state == alerted {
		x.resolve(s.subject(key), e, []event.Detail{{Name: "silent_s", Value: 0}})
	}
	if w.site >= 0 {
		s.sites[w.site].silent--
		s.markDirty(w.site)
	}
	w.state, w.backSince, w.hold = alive, 0, 0
	s.checkSites(x)
}

func (s *absenceState) siteOf(x *evalCtx, device string, lat, lon float64) int32 {
	name := x.cfg().Site(device, lat, lon)
	if i, ok := s.siteIndex[name]; ok {
		return i
	}
	i := int32(len(s.sites))
	s.sites = append(s.sites, site{name: name})
	s.siteIndex[name] = i
	return i
}

func (s *absenceState) tick(x *evalCtx) {
	r := s.r
	wm := x.wm()
	s.x = x
	// A key is silent once wm - last ≥ for. First count every key that
	// fell silent, so that the devices of a site that fail together are
	// decided together; then decide those whose wait is over.
	cutoff := wm - r.silence + 1
	s.keys.expire(cutoff, func(key string, _ int64, w *watch) bool {
		if wm-w.last >= r.forget {
			if w.state == alerted {
				x.resolve(s.subject(key), nil, []event.Detail{{Name: "forgotten", Value: true}})
			}
			s.leave(key, w)
			s.heap -= cap(w.id)
			return false
		}
		if w.state == alive {
			w.state, w.backSince = pending, 0
			if w.site >= 0 {
				s.sites[w.site].silent++
				s.markDirty(w.site)
			}
		}
		return true
	})
	s.keys.expire(cutoff, func(key string, last int64, w *watch) bool {
		if w.state != pending || w.hold > wm || last >= cutoff-r.wait && !s.settled(key, w) {
			return true
		}
		if w.site >= 0 {
			st := &s.sites[w.site]
			if st.alerted || s.siteSilent(st) {
				w.state = inhibited
				st.changed = true
				s.markDirty(w.site)
				return true
			}
		}
		w.state = alerted
		s.raiseKey(x, key, w)
		return true
	})
	s.checkSites(x)
}

// maxSettle bounds the members settled looks at; the devices of a bigger
// site wait the whole of Wait.
const maxSettle = 64

// settled reports whether a silent key need not wait the rest of Wait for
// the rest of its site: every other device of the site is silent already
// or was heard more than Wait after the key's last event, so that it did
// not fail together with it. A device alone in its site is settled at
// once.
func (s *absenceState) settled(key string, w *watch) bool {
	if w.site < 0 {
		return true
	}
	st := &s.sites[w.site]
	if st.silent == st.total {
		return true
	}
	if len(st.members) > maxSettle {
		return false
	}
	for _, m := range st.members {
		if m == key {
			continue
		}
		if o, ok := s.keys.get(m); ok && o.state == alive && o.last <= w.last+s.r.wait {
			return false
		}
	}
	return true
}

// siteSilent reports whether enough of a site is silent for a site alert.
func (s *absenceState) siteSilent(st *site) bool {
	return st.silent >= s.r.minDevices && float64(st.silent) >= s.r.fraction*float64(st.total)
}

// siteRecovered reports whether an open site alert may resolve.
func (s *absenceState) siteRecovered(st *site) bool {
	return st.silent < s.r.minDevices || float64(st.silent) < s.r.fraction/2*float64(st.total)
}

func (s *absenceState) raiseKey(x *evalCtx, key string, w *watch) {
	at := w.last + s.r.silence
	x.raise(&hit{
		subject:  s.subject(key),
		at:       time.UnixMilli(at).In(x.cfg().Location),
		lat:      float64(w.lat),
		lon:      float64(w.lon),
		evidence: []string{string(w.id)},
		details: []event.Detail{
			{Name: "last_seen", Value: time.UnixMilli(w.last).In(x.cfg().Location).Format(time.RFC3339)},
			{Name: "silent_s", Value: int((x.wm() - w.last) / 1000)},
		},
		sticky: true,
	})
}

// checkSites raises, updates and resolves the alerts of the sites whose
// counts changed.
func (s *absenceState) checkSites(x *evalCtx) {
	if !s.r.group {
		return
	}
	for _, i := range s.dirty {
		st := &s.sites[i]
		st.dirty = false
		switch {
		case st.alerted && s.siteRecovered(st):
			st.alerted = false
			x.resolve(event.Subject{Kind: event.SubjectArea, ID: st.name}, nil, []event.Detail{
				{Name: "site", Value: st.name}, {Name: "silent_devices", Value: st.silent}, {Name: "devices", Value: st.total},
			})
			// Devices still silent now stand on their own, after Wait:
			// the rest of a site that came back speaks within a
			// heartbeat period, and must not raise alerts of its own.
			for _, key := range st.members {
				if w, ok := s.keys.get(key); ok && w.state == inhibited {
					w.state, w.hold = pending, x.wm()+s.r.wait
				}
			}
		case st.changed:
			st.changed = false
			st.alerted = true
			s.raiseSite(x, st)
		}
	}
	s.dirty = s.dirty[:0]
}

func (s *absenceState) raiseSite(x *evalCtx, st *site) {
	var ids, devices []string
	var lat, lon float64
	var newest int64
	for _, key := range st.members {
		w, ok := s.keys.get(key)
		if !ok || w.state != inhibited {
			continue
		}
		ids = append(ids, string(w.id))
		devices = append(devices, key)
		lat += float64(w.lat)
		lon += float64(w.lon)
		newest = max(newest, w.last)
	}
	if len(devices) == 0 {
		return
	}
	n := float64(len(devices))
	slices.Sort(devices)
	if len(devices) > event.MaxEvidence {
		devices = devices[:event.MaxEvidence]
	}
	if len(ids) > event.MaxEvidence {
		ids = ids[len(ids)-event.MaxEvidence:]
	}
	x.raise(&hit{
		subject:  event.Subject{Kind: event.SubjectArea, ID: st.name},
		at:       time.UnixMilli(newest + s.r.silence).In(x.cfg().Location),
		lat:      lat / n,
		lon:      lon / n,
		evidence: ids,
		details: []event.Detail{
			{Name: "site", Value: st.name},
			{Name: "silent_devices", Value: st.silent},
			{Name: "devices", Value: st.total},
			{Name: "device_ids", Value: devices},
		},
		sticky:  true,
		summary: s.r.summary,
	})
}

// adopt implements adopter: a device alert whose key the replay did not
// see is watched again as alerted, silent since the alert's last_seen
// (its start minus the silence), so that the device's next event resolves
// it. A site alert whose site the replay did not rebuild is adopted with
// the silent devices it names (device_ids): they are watched again as
// silent members of the site, so that their return resolves it. A site
// alert names at most MaxEvidence devices; a site with more silent ones
// resolves when those it names are back.
func (s *absenceState) adopt(x *evalCtx, sit *situation) {
	if s.r.group && sit.subject.Kind == event.SubjectArea && sit.sticky {
		s.adoptSite(x, sit)
		return
	}
	if sit.subject.Kind != s.r.key.subject || !sit.sticky {
		return
	}
	key := sit.subject.ID
	if _, ok := s.keys.get(key); ok {
		return // the replay saw the key; its state is the replayed one
	}
	s.x = x
	last := sit.eventTime.UnixMilli() - s.r.silence
	w, _ := s.keys.touch(key, last)
	*w = watch{last: last, lat: float32(sit.lat), lon: float32(sit.lon), state: alerted, site: -1}
	if n := len(sit.evidence); n > 0 {
		w.id = append(w.id[:0], sit.evidence[n-1]...)
		s.heap += cap(w.id)
	}
	if s.r.group {
		w.site = s.siteOf(x, key, sit.lat, sit.lon)
		st := &s.sites[w.site]
		st.total++
		st.silent++
		st.members = append(st.members, cloneString(key))
	}
}

// adoptSite adopts an open site alert (see adopt).
func (s *absenceState) adoptSite(x *evalCtx, sit *situation) {
	var ids []string
	for _, d := range sit.details {
		if d.Name == "device_ids" {
			ids, _ = d.Value.([]string)
		}
	}
	i, ok := s.siteIndex[sit.subject.ID]
	if !ok {
		i = int32(len(s.sites))
		s.sites = append(s.sites, site{name: cloneString(sit.subject.ID)})
		s.siteIndex[s.sites[i].name] = i
	}
	st := &s.sites[i]
	if st.alerted {
		return // the replay rebuilt the site and its alert
	}
	s.x = x
	last := sit.eventTime.UnixMilli() - s.r.silence
	adopted := 0
	for _, key := range ids {
		if _, ok := s.keys.get(key); ok {
			continue // the replay saw it; its state is the replayed one
		}
		w, _ := s.keys.touch(key, last)
		*w = watch{last: last, lat: float32(sit.lat), lon: float32(sit.lon), state: inhibited, site: i}
		st.total++
		st.silent++
		st.members = append(st.members, cloneString(key))
		adopted++
	}
	if adopted > 0 {
		st.alerted = true
	}
}
