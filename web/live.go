package web

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"citywatch/event"
	"citywatch/internal/city"
)

// Bounds of the live view beyond Config's.
const (
	// maxMessagesPerAlert is how many lifecycle messages of one alert the
	// live view keeps (the first and the newest); older ones are in
	// ClickHouse.
	maxMessagesPerAlert = 50
	// maxDispatchStates is how many dispatch messages one alert keeps.
	maxDispatchStates = 100
	// maxUnits bounds the units tracked from positions and dispatches.
	maxUnits = 10000
	// maxMutes bounds the active mutes.
	maxMutes = 1000
	// staleAfter is the age after which a unit's position is stale and
	// not used for coverage (DESIGN.md: 2 minutes).
	staleAfter = 2 * time.Minute
)

// situation is what the live view knows of one alert id.
type situation struct {
	latest     event.Alert
	first      event.Alert   // its first message seen
	messages   []event.Alert // the newest maxMessagesPerAlert, oldest first
	dispatches []event.Dispatch
}

// opState is what operators did with an alert.
type opState struct {
	ClaimedBy string    `json:"claimed_by,omitempty"`
	ClaimedAt time.Time `json:"claimed_at,omitzero"`
	AckedBy   string    `json:"acked_by,omitempty"`
	AckedAt   time.Time `json:"acked_at,omitzero"`
	Closed    *closeOp  `json:"closed,omitempty"`
}

type closeOp struct {
	Outcome string    `json:"outcome"`
	Note    string    `json:"note"`
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

// unitState is the last known state of one patrol unit.
type unitState struct {
	ID       string
	Lat, Lon float64
	Status   string    // available, busy, off_duty (from its position report)
	Time     time.Time // of the position report; zero when none was seen
	SpeedKmh float64
	Heading  float64
	// Dispatch is the newest dispatch message naming the unit.
	Dispatch *event.Dispatch
}

// Mute hides a rule's alerts for a device or an area (district or circle)
// until Until.
type Mute struct {
	ID      string    `json:"id"`
	Rule    string    `json:"rule"`
	Device  string    `json:"device,omitempty"`
	Area    string    `json:"area,omitempty"`
	Until   time.Time `json:"until"`
	Reason  string    `json:"reason"`
	By      string    `json:"by"`
	Created time.Time `json:"created"`
}

func (m *Mute) matches(a *event.Alert, now time.Time) bool {
	return keyOf(a).mutedBy(m, now)
}

func keyOf(a *event.Alert) muteKey {
	return muteKey{rule: a.Rule, subject: a.Subject.ID, district: a.District, circle: a.CircleID}
}

// live is the in-memory view of the topics: the recent situations, the
// dispatches and the units. It is safe for concurrent use; every change
// that a console shows is published on the feed.
type live struct {
	mu     sync.Mutex
	alerts *simplelru.LRU[string, *situation]
	// ops is what operators did, by alert id; kept apart from alerts so
	// that actions restored from the audit log on start apply to alerts
	// read later, and actions on alerts older than the live view count.
	ops   *simplelru.LRU[string, *opState]
	units map[string]*unitState
	mutes []Mute
	city  *city.City
	feed  *hub
	m     *metrics

	// lastMessage is the time of the newest message read per topic.
	lastMessage map[string]time.Time
}

func newLive(c *city.City, size int, feed *hub, m *metrics) *live {
	l := &live{units: map[string]*unitState{}, city: c, feed: feed, m: m, lastMessage: map[string]time.Time{}}
	l.alerts, _ = simplelru.NewLRU[string, *situation](size, func(string, *situation) { m.liveEvicted.Inc() })
	l.ops, _ = simplelru.NewLRU[string, *opState](size, nil)
	for _, d := range c.DevicesOf(city.KindUnit) {
		l.units[d.ID] = &unitState{ID: d.ID, Lat: d.Lat, Lon: d.Lon, Status: "unknown"}
	}
	return l
}

// addAlert takes one alert message.
func (l *live) addAlert(a event.Alert) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.alerts.Get(a.ID)
	if !ok {
		s = &situation{first: a}
		l.alerts.Add(a.ID, s)
	}
	s.latest = a
	s.messages = append(s.messages, a)
	if len(s.messages) > maxMessagesPerAlert {
		s.messages = slices.Delete(s.messages, 1, 2) // keep the first
	}
	l.m.liveAlerts.Set(float64(l.alerts.Len()))
	l.publishLocked(s)
}

// addDispatch takes one dispatch message.
func (l *live) addDispatch(d event.Dispatch) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d.UnitID != "" {
		u := l.units[d.UnitID]
		if u == nil && len(l.units) < maxUnits {
			u = &unitState{ID: d.UnitID, Status: "unknown"}
			l.units[d.UnitID] = u
		}
		if u != nil && (u.Dispatch == nil || !d.Time.Before(u.Dispatch.Time) || u.Dispatch.ID == d.ID) {
			dc := d
			u.Dispatch = &dc
		}
	}
	s, ok := l.alerts.Get(d.AlertID)
	if !ok {
		return // the alert is older than the live view: its dispatches are in ClickHouse
	}
	s.dispatches = append(s.dispatches, d)
	if len(s.dispatches) > maxDispatchStates {
		s.dispatches = slices.Delete(s.dispatches, 0, 1)
	}
	l.publishLocked(s)
}

// addPosition takes one patrol.position event.
func (l *live) addPosition(e *event.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.units[e.DeviceID]
	if u == nil {
		if len(l.units) >= maxUnits {
			return
		}
		u = &unitState{ID: strings.Clone(e.DeviceID)}
		l.units[e.DeviceID] = u
	}
	if e.Time.Before(u.Time) {
		return // an older report read after a newer one (another partition)
	}
	// e's strings may share the decoder's buffer: copy what is kept.
	u.Lat, u.Lon, u.Status, u.Time, u.SpeedKmh, u.Heading = e.Lat, e.Lon, strings.Clone(e.Status), e.Time, e.SpeedKmh, e.HeadingDeg
}

// setOp changes the operators' state of alert id with f and, when the
// live view holds the alert, publishes its row.
func (l *live) setOp(id string, f func(*opState)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	op, ok := l.ops.Get(id)
	if !ok {
		op = &opState{}
		l.ops.Add(id, op)
	}
	f(op)
	if s, ok := l.alerts.Peek(id); ok {
		l.publishLocked(s)
	}
}

// opLocked returns a copy of the operators' state of alert id.
func (l *live) opLocked(id string) opState {
	op, ok := l.ops.Peek(id)
	if !ok {
		return opState{}
	}
	c := *op
	if op.Closed != nil {
		cl := *op.Closed
		c.Closed = &cl
	}
	return c
}

// op returns a copy of the operators' state of alert id.
func (l *live) op(id string) opState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.opLocked(id)
}

func (l *live) addMute(m Mute, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mutes = slices.DeleteFunc(l.mutes, func(o Mute) bool { return !now.Before(o.Until) || o.ID == m.ID })
	if len(l.mutes) >= maxMutes {
		l.mutes = l.mutes[1:]
	}
	l.mutes = append(l.mutes, m)
}

func (l *live) activeMutes(now time.Time) []Mute {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Mute
	for _, m := range l.mutes {
		if now.Before(m.Until) {
			out = append(out, m)
		}
	}
	return out
}

func (l *live) mutedLocked(a *event.Alert, now time.Time) bool {
	for i := range l.mutes {
		if l.mutes[i].matches(a, now) {
			return true
		}
	}
	return false
}

// muted reports whether an active mute hides a.
func (l *live) muted(a *event.Alert, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mutedLocked(a, now)
}

// publishLocked puts the situation's row on the feed.
func (l *live) publishLocked(s *situation) {
	row := rowOf(s, l.opLocked(s.latest.ID))
	data, err := json.Marshal(row)
	if err != nil {
		return
	}
	l.feed.publish(frame{
		event:    "alert",
		district: s.latest.District,
		alert:    keyOf(&s.latest),
		data:     event.RedactPersonal(data),
	})
}

// alertRow is one situation as the feed and the list show it: its newest
// message, what operators did, and its dispatches (newest state of each).
type alertRow struct {
	ID             string          `json:"id"`
	Rule           string          `json:"rule"`
	Severity       string          `json:"severity"`
	Status         string          `json:"status"`
	Subject        event.Subject   `json:"subject"`
	EventTime      time.Time       `json:"event_time"`
	FirstEventTime time.Time       `json:"first_event_time"`
	RaisedAt       time.Time       `json:"raised_at"`
	Lat            float64         `json:"lat"`
	Lon            float64         `json:"lon"`
	District       string          `json:"district"`
	CircleID       string          `json:"circle_id"`
	TierMinutes    int             `json:"tier_minutes"`
	Summary        string          `json:"summary"`
	Details        json.RawMessage `json:"details"`
	Evidence       []string        `json:"evidence"`
	Messages       int             `json:"messages"`
	Op             opState         `json:"op"`
	Dispatches     []dispatchView  `json:"dispatches"`
	Live           bool            `json:"live"`
}

type dispatchView struct {
	ID          string    `json:"id"`
	AlertID     string    `json:"alert_id"`
	UnitID      string    `json:"unit_id"`
	Status      string    `json:"status"`
	Time        time.Time `json:"time"`
	ETASeconds  float64   `json:"eta_s"`
	DistanceM   float64   `json:"distance_m"`
	CircleID    string    `json:"circle_id"`
	TierMinutes int       `json:"tier_minutes"`
}

func viewDispatch(d *event.Dispatch) dispatchView {
	return dispatchView{ID: d.ID, AlertID: d.AlertID, UnitID: d.UnitID, Status: string(d.Status), Time: d.Time,
		ETASeconds: d.ETASeconds, DistanceM: d.DistanceM, CircleID: d.CircleID, TierMinutes: d.TierMinutes}
}

// latestDispatches returns the newest state of each dispatch, in the order
// they were first seen.
func latestDispatches(ds []event.Dispatch) []dispatchView {
	out := []dispatchView{}
	idx := map[string]int{}
	for i := range ds {
		v := viewDispatch(&ds[i])
		if j, ok := idx[v.ID]; ok {
			if !v.Time.Before(out[j].Time) {
				// keep the ETA of the assignment when a later state has none
				if v.ETASeconds == 0 {
					v.ETASeconds, v.DistanceM = out[j].ETASeconds, out[j].DistanceM
				}
				out[j] = v
			}
			continue
		}
		idx[v.ID] = len(out)
		out = append(out, v)
	}
	return out
}

func rowOf(s *situation, op opState) alertRow {
	a := &s.latest
	ev := a.Evidence
	if ev == nil {
		ev = []string{}
	}
	return alertRow{
		ID: a.ID, Rule: a.Rule, Severity: string(a.Severity), Status: string(a.Status), Subject: a.Subject,
		EventTime: a.EventTime, FirstEventTime: s.first.EventTime, RaisedAt: a.RaisedAt, Lat: a.Lat, Lon: a.Lon,
		District: a.District, CircleID: a.CircleID, TierMinutes: a.TierMinutes, Summary: a.Summary,
		Details: a.AppendDetailsJSON(nil), Evidence: ev, Messages: len(s.messages), Op: op,
		Dispatches: latestDispatches(s.dispatches), Live: true,
	}
}

// rows returns the rows of the situations that keep admits, newest
// raised first.
func (l *live) rows(keep func(*event.Alert) bool) []alertRow {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []alertRow
	for _, s := range l.alerts.Values() {
		if keep(&s.latest) {
			out = append(out, rowOf(s, l.opLocked(s.latest.ID)))
		}
	}
	slices.SortFunc(out, func(a, b alertRow) int { return b.RaisedAt.Compare(a.RaisedAt) })
	return out
}

// detail returns a copy of the situation id.
func (l *live) detail(id string) (situation, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.alerts.Peek(id)
	if !ok {
		return situation{}, false
	}
	c := *s
	c.messages = slices.Clone(s.messages)
	c.dispatches = slices.Clone(s.dispatches)
	return c, true
}

// unitsSnapshot returns a copy of every unit's state, by id.
func (l *live) unitsSnapshot() []unitState {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]unitState, 0, len(l.units))
	for _, u := range l.units {
		c := *u
		if u.Dispatch != nil {
			d := *u.Dispatch
			c.Dispatch = &d
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b unitState) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// unit returns a copy of one unit's state.
func (l *live) unit(id string) (unitState, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.units[id]
	if u == nil {
		return unitState{}, false
	}
	c := *u
	if u.Dispatch != nil {
		d := *u.Dispatch
		c.Dispatch = &d
	}
	return c, true
}

func (l *live) seen(topic string, t time.Time) {
	l.mu.Lock()
	if t.After(l.lastMessage[topic]) {
		l.lastMessage[topic] = t
	}
	l.mu.Unlock()
}

func (l *live) stats() (alerts, units int, last map[string]time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	last = make(map[string]time.Time, len(l.lastMessage))
	for k, v := range l.lastMessage {
		last[k] = v
	}
	return l.alerts.Len(), len(l.units), last
}

// mutedKey reports whether an active mute hides the alert of k.
func (l *live) mutedKey(k muteKey, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.mutes {
		if k.mutedBy(&l.mutes[i], now) {
			return true
		}
	}
	return false
}
