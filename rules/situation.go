package rules

import (
	"slices"
	"strconv"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
)

// situation is an open alert: one real-world situation of one rule and
// subject, from its firing message to its resolved one.
type situation struct {
	id        string
	subject   event.Subject
	last      int64 // event time (ms) of the newest evidence
	sticky    bool  // resolved by the kind, not by quiet time
	severity  event.Severity
	eventTime time.Time
	lat, lon  float64
	evidence  []string
	details   []event.Detail
	summary   string
	// sent is the event time (ms) of its last message and sentLat,
	// sentLon its place; held tells that it holds evidence that message
	// did not carry, listed that its key is in the rule's held list.
	sent             int64
	sentLat, sentLon float64
	held, listed     bool
}

// moveAtOnce is how far (m) a situation's place must move for an update to
// go out before the rule's update interval has passed: the units on their
// way need the new place of a moving subject.
const moveAtOnce = 100

// hit is what a kind reports when its condition holds for a subject.
type hit struct {
	subject event.Subject
	// e is the event that raised or updated the situation; nil for one
	// raised by a timeout, which gives at, lat and lon instead.
	e        *event.Event
	at       time.Time
	lat, lon float64
	// evidence are the ids of the events behind the hit, oldest first;
	// ids the situation already holds are not added twice.
	evidence []string
	details  []event.Detail
	severity event.Severity // "" means the rule's
	// sticky situations stay open until the kind resolves them.
	sticky bool
	// vars adds placeholders for the summary.
	vars func(name string) (string, bool)
	// summary replaces the rule's summary template when not nil.
	summary *template
}

func (h *hit) time() time.Time {
	if h.e != nil {
		return h.e.Time
	}
	return h.at
}

// sitKey is the situation table key of a subject; it fits a stack buffer
// for the usual subjects, so looking up an open situation does not
// allocate.
func sitKey(buf []byte, s event.Subject) []byte {
	buf = append(buf, s.Kind...)
	buf = append(buf, 0)
	return append(buf, s.ID...)
}

// raise reports a hit: it opens a situation (a firing message) or, when
// one is open for the subject and its last evidence is within the rule's
// suppression window, adds to it (an updated message, only when the hit
// brings evidence it did not have).
func (x *evalCtx) raise(h *hit) {
	run := x.run
	t := h.time().UnixMilli()
	var kb [96]byte
	key := sitKey(kb[:0], h.subject)
	if s, ok := run.sits.get(string(key)); ok {
		if s.sticky || t-s.last <= run.r.suppress {
			x.update(s, h, t, key)
			run.sits.touch(string(key), t)
			return
		}
		// The old situation ended quietly before the sweep saw it.
		x.eng.endQuietly(run, s, t)
		run.sits.delete(string(key))
	}
	if run.sits.len() >= x.eng.cfg.MaxOpenAlerts {
		// Make room by resolving the situation updated longest ago.
		if h := run.sits.head; h >= 0 {
			x.eng.emit(run, &run.sits.nodes[h].val, event.AlertResolved)
			run.sits.remove(h)
		}
	}
	s, _ := run.sits.touch(string(key), t)
	*s = situation{
		id:       event.AlertID(run.r.id, h.subject, h.time()),
		subject:  event.Subject{Kind: h.subject.Kind, ID: cloneString(h.subject.ID)},
		last:     t,
		sticky:   h.sticky,
		severity: h.severity,
	}
	if s.severity == "" {
		s.severity = run.r.severity
	}
	x.fill(s, h)
	for _, id := range h.evidence {
		s.addEvidence(id)
	}
	x.eng.send(run, s, event.AlertFiring)
}

// update adds h to the open situation s (key is its table key) and sends
// an updated message when h brings evidence s did not have, at once or,
// within the rule's update interval, held for sendHeld.
func (x *evalCtx) update(s *situation, h *hit, t int64, key []byte) {
	x.eng.sendDue(x.run, s, t)
	added := false
	for _, id := range h.evidence {
		if s.addEvidence(id) {
			added = true
		}
	}
	if !added {
		return
	}
	if t > s.last {
		s.last = t
	}
	rose := false
	if h.severity != "" && severityRank(h.severity) > severityRank(s.severity) {
		s.severity, rose = h.severity, true
	}
	x.fill(s, h)
	run := x.run
	if every := run.r.updateEvery; every > 0 && !rose && t-s.sent < every &&
		city.DistanceM(s.sentLat, s.sentLon, s.lat, s.lon) < moveAtOnce {
		s.held = true
		if !s.listed {
			s.listed = true
			run.held = append(run.held, string(key))
			if due := s.sent + every; len(run.held) == 1 || due < run.heldDue {
				run.heldDue = due
			}
		}
		return
	}
	x.eng.send(run, s, event.AlertUpdated)
}

// send emits a firing or updated message of s and notes what it carried.
func (e *Engine) send(run *ruleRun, s *situation, status event.AlertStatus) {
	e.emit(run, s, status)
	s.sent = s.eventTime.UnixMilli()
	s.sentLat, s.sentLon = s.lat, s.lon
	s.held = false
}

// sendDue sends the update s holds when its interval has passed at t (Unix
// ms), before anything that comes at t changes s. Whichever comes first,
// the watermark passing the interval (sendHeld) or the situation's next
// event at or after it, the message is the same: once the watermark has
// passed, the events that could still have joined it are late. So a
// replay, whose watermark waits where live did not, sends what live sent.
func (e *Engine) sendDue(run *ruleRun, s *situation, t int64) {
	if s.held && t >= s.sent+run.r.updateEvery {
		e.send(run, s, event.AlertUpdated)
	}
}

// endQuietly resolves s, whose suppression window passed by t (Unix ms),
// after the update it holds.
func (e *Engine) endQuietly(run *ruleRun, s *situation, t int64) {
	e.sendDue(run, s, t)
	e.emit(run, s, event.AlertResolved)
}

// sendHeld sends the updates held back by the rule's update interval whose
// interval the watermark has passed.
func (e *Engine) sendHeld(run *ruleRun) {
	if len(run.held) == 0 || e.wm < run.heldDue {
		return
	}
	keep := run.held[:0]
	for _, key := range run.held {
		s, ok := run.sits.get(key)
		if !ok || !s.listed {
			continue // resolved, or replaced and listed again
		}
		due := s.sent + run.r.updateEvery
		if !s.held || e.wm >= due {
			if s.held {
				e.send(run, s, event.AlertUpdated)
			}
			s.listed = false
			continue
		}
		if len(keep) == 0 || due < run.heldDue {
			run.heldDue = due
		}
		keep = append(keep, key)
	}
	clear(run.held[len(keep):])
	run.held = keep
}

// fill sets the situation's place, time, details and summary from h.
func (x *evalCtx) fill(s *situation, h *hit) {
	s.eventTime = h.time()
	if h.e != nil {
		s.lat, s.lon = h.e.Lat, h.e.Lon
	} else {
		s.lat, s.lon = h.lat, h.lon
	}
	s.details = cloneDetails(h.details)
	t := x.run.r.summary
	if h.summary != nil {
		t = *h.summary
	}
	if !t.empty() {
		s.summary = t.render(func(name string) (string, bool) {
			return h.lookup(name, s)
		})
	}
}

// lookup resolves a summary placeholder: the subject, a detail, a
// placeholder of the kind, then a field of the event.
func (h *hit) lookup(name string, s *situation) (string, bool) {
	switch name {
	case "subject":
		return s.subject.ID, true
	case "severity":
		return string(s.severity), true
	}
	for _, d := range h.details {
		if d.Name == name {
			return formatValue(d.Value), true
		}
	}
	if h.vars != nil {
		if v, ok := h.vars(name); ok {
			return v, true
		}
	}
	if h.e != nil {
		if f, ok := stringFields[name]; ok {
			return f(h.e), true
		}
		if f, ok := numberFields[name]; ok {
			return formatValue(f(h.e)), true
		}
		if name == "time" {
			return h.e.Time.Format("15:04:05"), true
		}
	}
	return "", false
}

func (s *situation) addEvidence(id string) bool {
	if id == "" || slices.Contains(s.evidence, id) {
		return false
	}
	if len(s.evidence) == event.MaxEvidence {
		copy(s.evidence, s.evidence[1:])
		s.evidence = s.evidence[:event.MaxEvidence-1]
	}
	s.evidence = append(s.evidence, cloneString(id))
	return true
}

// resolve closes the open situation of subject, if any, with a resolved
// message; e (may be nil) is the event that ended it.
func (x *evalCtx) resolve(subject event.Subject, e *event.Event, details []event.Detail) {
	var kb [96]byte
	key := sitKey(kb[:0], subject)
	s, ok := x.run.sits.get(string(key))
	if !ok {
		return
	}
	at := x.eng.wm
	if e != nil {
		at = e.Time.UnixMilli()
	}
	x.eng.sendDue(x.run, s, at)
	if e != nil {
		s.eventTime = e.Time
		s.addEvidence(e.ID)
	}
	if details != nil {
		s.details = cloneDetails(details)
	}
	x.eng.emit(x.run, s, event.AlertResolved)
	x.run.sits.delete(string(key))
}

// expireSituations resolves the situations whose last evidence left the
// suppression window.
func (e *Engine) expireSituations(run *ruleRun) {
	run.sits.expire(e.wm-run.r.suppress, func(_ string, _ int64, s *situation) bool {
		if s.sticky {
			return true
		}
		e.endQuietly(run, s, e.wm)
		return false
	})
}

// emit appends one message of situation s to the call's output.
func (e *Engine) emit(run *ruleRun, s *situation, status event.AlertStatus) {
	a := event.Alert{
		ID:        s.id,
		Rule:      run.r.id,
		Severity:  s.severity,
		Status:    status,
		Subject:   s.subject,
		EventTime: s.eventTime,
		RaisedAt:  e.now,
		Lat:       s.lat,
		Lon:       s.lon,
		Evidence:  slices.Clone(s.evidence),
		Summary:   s.summary,
		Details:   s.details,
	}
	if e.cfg.Locate != nil {
		a.District, a.CircleID, a.TierMinutes = e.cfg.Locate(a.Lat, a.Lon)
	}
	e.out = append(e.out, a)
	e.stats.Alerts++
	if run.m != nil {
		run.m.alert(status)
	}
}

// cloneDetails copies the strings of d, which may share memory with a
// decoded message.
func cloneDetails(d []event.Detail) []event.Detail {
	out := make([]event.Detail, len(d))
	for i, v := range d {
		out[i].Name = v.Name
		switch x := v.Value.(type) {
		case string:
			out[i].Value = cloneString(x)
		case []string:
			c := make([]string, len(x))
			for j := range x {
				c[j] = cloneString(x[j])
			}
			out[i].Value = c
		default:
			out[i].Value = x
		}
	}
	return out
}

func severityRank(s event.Severity) int {
	switch s {
	case event.SeverityCritical:
		return 4
	case event.SeverityHigh:
		return 3
	case event.SeverityMedium:
		return 2
	case event.SeverityLow:
		return 1
	}
	return 0
}

// cloneString copies s so that it does not keep a decoded message alive.
func cloneString(s string) string {
	if s == "" {
		return ""
	}
	return string([]byte(s))
}

func itoa(n int) string { return strconv.Itoa(n) }

// seed reopens the situation of an open alert read back from the alerts
// topic, as the engine had it when it last emitted a message for it: the
// same id, evidence and figures. A restart seeds every open alert before it
// replays the input, so that the replay updates these situations (or finds
// nothing new for them) instead of raising them again under a new id. It
// reports false when the alert's rule is not running.
func (e *Engine) seed(a *event.Alert) bool {
	for _, run := range e.runs {
		if run.r.id != a.Rule {
			continue
		}
		var kb [96]byte
		key := sitKey(kb[:0], a.Subject)
		t := a.EventTime.UnixMilli()
		s, _ := run.sits.touch(string(key), t)
		_, sticky := run.r.kind.(*absenceRule)
		*s = situation{
			id:        cloneString(a.ID),
			subject:   event.Subject{Kind: a.Subject.Kind, ID: cloneString(a.Subject.ID)},
			last:      t,
			sticky:    sticky,
			severity:  a.Severity,
			eventTime: a.EventTime,
			lat:       a.Lat,
			lon:       a.Lon,
			details:   cloneDetails(a.Details),
			summary:   a.Summary,
			sent:      t,
			sentLat:   a.Lat,
			sentLon:   a.Lon,
		}
		if s.severity == "" {
			s.severity = run.r.severity
		}
		for _, id := range a.Evidence {
			s.addEvidence(id)
		}
		return true
	}
	return false
}

// adoptSeeded hands the situations that seed reopened, and that the replay
// did not account for, to the kinds that resolve them on their own terms:
// an absence rule learns that the silent key of an open alert is silent,
// so that the key's return resolves the alert even when the key's last
// event was older than the replay. It runs once, after the replay.
func (e *Engine) adoptSeeded() {
	for _, run := range e.runs {
		a, ok := run.st.(adopter)
		if !ok {
			continue
		}
		e.ctx.run = run
		run.sits.each(func(_ string, _ int64, s *situation) {
			a.adopt(&e.ctx, s)
		})
	}
}

// adopter is a kind whose state must know of an open situation to resolve
// it.
type adopter interface {
	adopt(x *evalCtx, s *situation)
}
