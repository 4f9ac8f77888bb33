package rules

import (
	"strconv"
	"strings"
	"time"

	"citywatch/event"
)

// GeofenceSpec is a geofence rule: an event whose point lies inside a
// protected zone (Config.Zones), during the rule's schedule and the zone's
// own, raises an alert for the zone; with Dwell, only once the same object
// (camera and track id, or the device) has been seen inside for that long.
//
//	geofence:
//	  zone_kinds: [school, depot, government]
//	  schedule: {from: "22:00", to: "06:00"}
type GeofenceSpec struct {
	// ZoneKinds limits the rule to zones of these kinds; default all.
	ZoneKinds []string      `yaml:"zone_kinds"`
	Schedule  *ScheduleSpec `yaml:"schedule"`
	Dwell     time.Duration `yaml:"dwell"`
	// Gap is how long an object may go unseen inside and still be the
	// same stay, for Dwell; default 1m.
	Gap time.Duration `yaml:"gap"`
}

// ScheduleSpec is a daily period in local time (Config.TimeZone): from
// and to as "HH:MM"; a period whose end is before its start runs past
// midnight. Days limits it to weekdays (mon … sun) on which it starts.
type ScheduleSpec struct {
	From string   `yaml:"from"`
	To   string   `yaml:"to"`
	Days []string `yaml:"days"`
}

type schedule struct {
	from, to int // minutes of the day
	days     uint8
}

var dayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

func parseClock(s string) (int, bool) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(m) != 2 {
		return 0, false
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || hh == 24 && mm != 0 {
		return 0, false
	}
	return hh*60 + mm, true
}

func (s *ScheduleSpec) compile() (*schedule, error) {
	from, ok := parseClock(s.From)
	if !ok {
		return nil, &fieldError{field: "schedule.from", msg: "must be HH:MM, got " + quote(s.From)}
	}
	to, ok := parseClock(s.To)
	if !ok {
		return nil, &fieldError{field: "schedule.to", msg: "must be HH:MM, got " + quote(s.To)}
	}
	sc := &schedule{from: from, to: to, days: 0x7f}
	if len(s.Days) > 0 {
		sc.days = 0
		for _, d := range s.Days {
			wd, ok := dayNames[strings.ToLower(d)]
			if !ok {
				return nil, &fieldError{field: "schedule.days", msg: "unknown day " + quote(d) + " (mon … sun)"}
			}
			sc.days |= 1 << wd
		}
	}
	return sc, nil
}

// covers reports whether local time lt is inside the schedule.
func (sc *schedule) covers(lt time.Time) bool {
	h, m, _ := lt.Clock()
	min := h*60 + m
	wd := lt.Weekday()
	switch {
	case sc.from == sc.to:
		return sc.days&(1<<wd) != 0
	case sc.from < sc.to:
		return min >= sc.from && min < sc.to && sc.days&(1<<wd) != 0
	case min >= sc.from:
		return sc.days&(1<<wd) != 0
	case min < sc.to:
		// After midnight: the period started the day before.
		return sc.days&(1<<((wd+6)%7)) != 0
	}
	return false
}

type geofenceRule struct {
	kinds    []string
	schedule *schedule
	dwell    int64
	gap      int64
}

func (s *GeofenceSpec) compile() (kindSpec, error) {
	r := &geofenceRule{kinds: s.ZoneKinds, dwell: s.Dwell.Milliseconds(), gap: s.Gap.Milliseconds()}
	if r.dwell < 0 {
		return nil, &fieldError{field: "dwell", msg: "must not be negative"}
	}
	if r.gap < 0 {
		return nil, &fieldError{field: "gap", msg: "must not be negative"}
	}
	if r.gap == 0 {
		r.gap = time.Minute.Milliseconds()
	}
	if s.Schedule != nil {
		sc, err := s.Schedule.compile()
		if err != nil {
			return nil, err
		}
		r.schedule = sc
	}
	return r, nil
}

func (r *geofenceRule) window() time.Duration { return 0 }

func (r *geofenceRule) newState(cfg *Config) kindState {
	return &geofenceState{r: r, stays: newTable[stay](cfg.MaxKeys)}
}

// stay is an object seen inside a zone, for dwell.
type stay struct {
	first, last int64
	ids         []string
}

type geofenceState struct {
	r     *geofenceRule
	stays *table[stay]
	zones []Zone
	key   []byte
}

func (s *geofenceState) size() (int, int, uint64) {
	return s.stays.len(), s.stays.bytes(), s.stays.evicted
}

func (s *geofenceState) tick(x *evalCtx) {
	if s.r.dwell > 0 {
		s.stays.expire(x.wm()-s.r.gap, nil)
	}
}

func (s *geofenceState) process(x *evalCtx, e *event.Event) {
	r := s.r
	zf := x.cfg().Zones
	if zf == nil {
		return
	}
	lt := e.Time.In(x.cfg().Location)
	if r.schedule != nil && !r.schedule.covers(lt) {
		return
	}
	s.zones = zf(s.zones[:0], e.Lat, e.Lon)
	for i := range s.zones {
		z := &s.zones[i]
		if len(r.kinds) > 0 && !containsString(r.kinds, z.Kind) {
			continue
		}
		if z.Active != nil && !z.Active(e.Time) {
			continue
		}
		if !x.owns(z.ID) {
			continue
		}
		evidence := []string{e.ID}
		stayed := int64(0)
		if r.dwell > 0 {
			t := e.Time.UnixMilli()
			s.key = append(append(append(append(s.key[:0], z.ID...), 0), e.DeviceID...), 0)
			s.key = append(s.key, e.TrackID...)
			st, added := s.stays.touch(string(s.key), t)
			if !added && t-st.last > r.gap {
				*st = stay{ids: st.ids[:0]} // unseen too long: a new stay
				added = true
			}
			if added || t < st.first {
				st.first = t
			}
			st.last = max(st.last, t)
			if len(st.ids) < event.MaxEvidence && !containsString(st.ids, e.ID) {
				st.ids = append(st.ids, cloneString(e.ID))
			}
			stayed = t - st.first
			if stayed < r.dwell {
				continue
			}
			evidence = st.ids
		}
		d := []event.Detail{
			{Name: "zone_id", Value: z.ID}, {Name: "zone_name", Value: z.Name}, {Name: "zone_kind", Value: z.Kind},
			{Name: "device_id", Value: e.DeviceID}, {Name: "object", Value: e.Object}, {Name: "local_time", Value: lt.Format("15:04:05")},
		}
		if r.dwell > 0 {
			d = append(d, event.Detail{Name: "dwell_s", Value: int(stayed / 1000)})
		}
		x.raise(&hit{subject: event.Subject{Kind: event.SubjectZone, ID: z.ID}, e: e, evidence: evidence, details: d})
	}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// PolygonZone is a zone with its outline, for PolygonZones.
type PolygonZone struct {
	Zone
	// Polygon is the outline as [lat, lon] vertices, not closed.
	Polygon [][2]float64
}

// PolygonZones returns a ZoneFunc over a few polygons, tested one by one
// (ray casting). It serves tests and small deployments; the city model
// answers from a spatial index.
func PolygonZones(zones []PolygonZone) ZoneFunc {
	return func(dst []Zone, lat, lon float64) []Zone {
		for i := range zones {
			if inPolygon(zones[i].Polygon, lat, lon) {
				dst = append(dst, zones[i].Zone)
			}
		}
		return dst
	}
}

func inPolygon(poly [][2]float64, lat, lon float64) bool {
	in := false
	for i, j := 0, len(poly)-1; i < len(poly); j, i = i, i+1 {
		yi, xi := poly[i][0], poly[i][1]
		yj, xj := poly[j][0], poly[j][1]
		if (yi > lat) != (yj > lat) && lon < (xj-xi)*(lat-yi)/(yj-yi)+xi {
			in = !in
		}
	}
	return in
}
