package web

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/store"
)

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// serveStatic serves the embedded pages' scripts, styles and vendored
// libraries.
func (s *Server) serveStatic(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(path.Clean(r.URL.Path), "/static/")
	if _, err := fs.Stat(s.static, name); err != nil || strings.HasSuffix(name, ".html") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeFileFS(w, r, s.static, name)
}

// page serves one embedded HTML page.
func (s *Server) page(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		data, err := fs.ReadFile(s.static, name)
		if err != nil {
			s.error(w, r, http.StatusInternalServerError, fmt.Errorf("cannot read page %s: %w", name, err))
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(data)
	}
}

// home sends each role to its page; without a session it shows the
// running roles and the way to log in.
func (s *Server) home(w http.ResponseWriter, r *http.Request) {
	var u *User
	if c, err := r.Cookie(sessionCookie); err == nil {
		if sess := s.sessions.get(c.Value, s.now()); sess != nil {
			u = sess.user
		}
	}
	if u == nil {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := homeTemplate.Execute(w, s.roles); err != nil {
			s.log.Warn("cannot render home page", "err", err)
		}
		return
	}
	to := "/console"
	switch u.Role {
	case RolePatrol:
		to = "/patrol"
	case RoleAnalyst:
		to = "/trends"
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// statusPage is the plain page of roles and dependencies, for admins.
func (s *Server) statusPage(w http.ResponseWriter, r *http.Request) {
	res, _ := s.runChecks(r.Context())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := statusTemplate.Execute(w, struct {
		Roles  []string
		Checks []checkResult
	}{s.roles, res}); err != nil {
		s.log.Warn("cannot render status page", "err", err)
	}
}

// login checks a name and password and sets the session cookie.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name     string `json:"name"`
		Password string `json:"password"`
	}
	if err := decodeJSON(r, &req); err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	if req.Name == "" || len(req.Name) > 64 || len(req.Password) > 256 {
		s.error(w, r, http.StatusBadRequest, errors.New("name and password are required"))
		return
	}
	now := s.now()
	sess, err := s.sessions.login(s.users, req.Name, req.Password, now)
	switch {
	case errors.Is(err, errLockedOut):
		s.m.logins.WithLabelValues("locked").Inc()
		s.error(w, r, http.StatusTooManyRequests, err)
		return
	case err != nil:
		s.m.logins.WithLabelValues("failed").Inc()
		if s.db != nil {
			_ = s.audit(r.Context(), req.Name, "login.failed", req.Name, map[string]string{"remote": remoteHost(r)})
		}
		s.error(w, r, http.StatusUnauthorized, errBadLogin)
		return
	}
	s.m.logins.WithLabelValues("ok").Inc()
	if s.db != nil {
		if err := s.audit(r.Context(), sess.user.Name, "login", sess.user.Name, map[string]string{"remote": remoteHost(r)}); err != nil {
			s.sessions.logout(sess.token)
			s.error(w, r, http.StatusServiceUnavailable, err)
			return
		}
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: sess.token, Path: "/", Expires: sess.expires,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil || s.cfg.SecureCookies,
	})
	s.writeJSON(w, http.StatusOK, meView(sess.user))
}

func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.sessions.logout(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil || s.cfg.SecureCookies})
	if s.db != nil {
		_ = s.audit(r.Context(), userOf(r).Name, "logout", userOf(r).Name, struct{}{})
	}
	s.writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

type me struct {
	Name      string   `json:"name"`
	Role      Role     `json:"role"`
	Districts []string `json:"districts"`
	Unit      string   `json:"unit,omitempty"`
}

func meView(u *User) me {
	d := u.Districts
	if d == nil {
		d = []string{}
	}
	return me{Name: u.Name, Role: u.Role, Districts: d, Unit: u.Unit}
}

func (s *Server) me(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, meView(userOf(r)))
}

// alertFilter reads the filters common to the alert list.
type alertQuery struct {
	severity, rule, district, circle string
	since, until                     time.Time
	limit                            int
	muted                            bool
}

func parseAlertQuery(r *http.Request) (alertQuery, error) {
	q := r.URL.Query()
	aq := alertQuery{severity: q.Get("severity"), rule: q.Get("rule"), district: q.Get("district"), circle: q.Get("circle"), limit: 200, muted: q.Get("muted") == "1"}
	if aq.severity != "" && !event.Severity(aq.severity).Valid() {
		return aq, fmt.Errorf("severity: %q is not critical, high, medium or low", aq.severity)
	}
	var err error
	if v := q.Get("since"); v != "" {
		if aq.since, err = time.Parse(time.RFC3339, v); err != nil {
			return aq, fmt.Errorf("since: %w", err)
		}
	}
	if v := q.Get("until"); v != "" {
		if aq.until, err = time.Parse(time.RFC3339, v); err != nil {
			return aq, fmt.Errorf("until: %w", err)
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return aq, errors.New("limit: must be 1 to 1000")
		}
		aq.limit = n
	}
	return aq, nil
}

func (aq *alertQuery) keep(u *User, a *event.Alert) bool {
	return u.sees(a.District) &&
		(aq.severity == "" || string(a.Severity) == aq.severity) &&
		(aq.rule == "" || a.Rule == aq.rule) &&
		(aq.district == "" || a.District == aq.district) &&
		(aq.circle == "" || a.CircleID == aq.circle) &&
		(aq.since.IsZero() || !a.RaisedAt.Before(aq.since)) &&
		(aq.until.IsZero() || a.RaisedAt.Before(aq.until))
}

// listAlerts answers one row per situation, newest first: the live view's,
// then ClickHouse's for what is older or was dropped from it. Muted alerts
// are left out unless muted=1. feed_seq is the feed position the list is
// current to: a client connects the feed with last_event_id=feed_seq and
// misses nothing.
func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request) {
	aq, err := parseAlertQuery(r)
	if err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	u := userOf(r)
	now := s.now()
	seq := s.hub.lastSeq()
	rows := s.live.rows(func(a *event.Alert) bool {
		return aq.keep(u, a) && (aq.muted || !s.live.mutedLocked(a, now))
	})
	out := struct {
		FeedSeq      uint64     `json:"feed_seq"`
		Alerts       []alertRow `json:"alerts"`
		HistoryError string     `json:"history_error,omitempty"`
	}{FeedSeq: seq, Alerts: rows}
	if len(out.Alerts) > aq.limit {
		out.Alerts = out.Alerts[:aq.limit]
	}
	if s.db != nil && len(out.Alerts) < aq.limit {
		hist, err := s.history(r.Context(), u, aq, now)
		if err != nil {
			out.HistoryError = "ClickHouse: history unavailable"
			s.log.Warn("cannot read alert history", "err", err)
		}
		have := map[string]bool{}
		for _, a := range out.Alerts {
			have[a.ID] = true
		}
		for _, h := range hist {
			if len(out.Alerts) >= aq.limit {
				break
			}
			if !have[h.ID] {
				h.Op = s.live.op(h.ID)
				out.Alerts = append(out.Alerts, h)
			}
		}
	}
	if out.Alerts == nil {
		out.Alerts = []alertRow{}
	}
	s.writeJSON(w, http.StatusOK, out)
}

func (s *Server) history(ctx context.Context, u *User, aq alertQuery, now time.Time) ([]alertRow, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	f := store.AlertFilter{Since: aq.since, Until: aq.until, Severity: aq.severity, Rule: aq.rule, District: aq.district, Circle: aq.circle, Districts: u.Districts, Limit: aq.limit}
	if f.Since.IsZero() {
		f.Since = now.Add(-7 * 24 * time.Hour)
	}
	rows, err := s.db.LatestAlerts(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([]alertRow, 0, len(rows))
	for i := range rows {
		a := alertOfRow(&rows[i])
		if !aq.muted && s.live.muted(&a, now) {
			continue
		}
		out = append(out, historyRow(&rows[i]))
	}
	return out, nil
}

func alertOfRow(r *store.AlertRow) event.Alert {
	return event.Alert{ID: r.ID, Rule: r.Rule, Severity: event.Severity(r.Severity), Status: event.AlertStatus(r.Status),
		Subject: event.Subject{Kind: r.SubjectKind, ID: r.SubjectID}, EventTime: r.EventTime, RaisedAt: r.RaisedAt,
		Lat: r.Lat, Lon: r.Lon, District: r.District, CircleID: r.CircleID, TierMinutes: r.TierMinutes, Evidence: r.Evidence, Summary: r.Summary}
}

func historyRow(r *store.AlertRow) alertRow {
	details := json.RawMessage(r.Details)
	if !json.Valid(details) {
		details = json.RawMessage("{}")
	}
	ev := r.Evidence
	if ev == nil {
		ev = []string{}
	}
	return alertRow{ID: r.ID, Rule: r.Rule, Severity: r.Severity, Status: r.Status, Subject: event.Subject{Kind: r.SubjectKind, ID: r.SubjectID},
		EventTime: r.EventTime, FirstEventTime: r.EventTime, RaisedAt: r.RaisedAt, Lat: r.Lat, Lon: r.Lon, District: r.District,
		CircleID: r.CircleID, TierMinutes: r.TierMinutes, Summary: r.Summary, Details: details, Evidence: ev, Messages: 1,
		Dispatches: []dispatchView{}}
}

// alertMessage is one lifecycle message in an alert's detail.
type alertMessage struct {
	Status    string          `json:"status"`
	EventTime time.Time       `json:"event_time"`
	RaisedAt  time.Time       `json:"raised_at"`
	Summary   string          `json:"summary"`
	Evidence  []string        `json:"evidence"`
	Details   json.RawMessage `json:"details"`
}

type timelineEntry struct {
	Time time.Time `json:"time"`
	What string    `json:"what"` // raised, updated, resolved, claimed, acked, closed, or a dispatch status
	Unit string    `json:"unit,omitempty"`
	By   string    `json:"by,omitempty"`
	Note string    `json:"note,omitempty"`
}

type rankedUnit struct {
	ID          string    `json:"id"`
	Status      string    `json:"status"`
	Lat         float64   `json:"lat"`
	Lon         float64   `json:"lon"`
	PositionAge float64   `json:"position_age_s"` // -1: no position seen
	Stale       bool      `json:"stale"`
	DistanceM   float64   `json:"distance_m"`
	ETASeconds  float64   `json:"eta_s"`
	Available   bool      `json:"available"`
	Dispatch    string    `json:"dispatch,omitempty"` // status of its current dispatch
	Seen        time.Time `json:"position_time,omitzero"`
}

type alertDetailView struct {
	Alert      alertRow        `json:"alert"`
	Messages   []alertMessage  `json:"messages"`
	Dispatches []dispatchView  `json:"dispatches"`
	Timeline   []timelineEntry `json:"timeline"`
	Units      []rankedUnit    `json:"units"`
	Muted      bool            `json:"muted"`
	Covert     bool            `json:"covert"`
}

// findAlert returns the situation of id from the live view or ClickHouse,
// if the user may see it.
func (s *Server) findAlert(ctx context.Context, u *User, id string) (alertDetailView, bool, error) {
	if sit, ok := s.live.detail(id); ok {
		if !u.sees(sit.latest.District) {
			return alertDetailView{}, false, nil
		}
		v := alertDetailView{Alert: rowOf(&sit, s.live.op(id))}
		for i := range sit.messages {
			m := &sit.messages[i]
			v.Messages = append(v.Messages, alertMessage{Status: string(m.Status), EventTime: m.EventTime, RaisedAt: m.RaisedAt,
				Summary: m.Summary, Evidence: nonNil(m.Evidence), Details: m.AppendDetailsJSON(nil)})
		}
		for i := range sit.dispatches {
			v.Dispatches = append(v.Dispatches, viewDispatch(&sit.dispatches[i]))
		}
		v.Covert = sit.latest.Detail("covert") == true
		return v, true, nil
	}
	if s.db == nil {
		return alertDetailView{}, false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msgs, err := s.db.AlertMessages(ctx, id)
	if err != nil || len(msgs) == 0 {
		return alertDetailView{}, false, err
	}
	last := &msgs[len(msgs)-1]
	if !u.sees(last.District) {
		return alertDetailView{}, false, nil
	}
	v := alertDetailView{Alert: historyRow(last)}
	v.Alert.FirstEventTime = msgs[0].EventTime
	v.Alert.Messages = len(msgs)
	v.Alert.Op = s.live.op(id)
	for i := range msgs {
		m := &msgs[i]
		d := json.RawMessage(m.Details)
		if !json.Valid(d) {
			d = json.RawMessage("{}")
		}
		v.Messages = append(v.Messages, alertMessage{Status: m.Status, EventTime: m.EventTime, RaisedAt: m.RaisedAt, Summary: m.Summary, Evidence: nonNil(m.Evidence), Details: d})
	}
	ds, err := s.db.AlertDispatches(ctx, id)
	if err != nil {
		return alertDetailView{}, false, err
	}
	for i := range ds {
		v.Dispatches = append(v.Dispatches, viewDispatch(&ds[i]))
	}
	v.Alert.Dispatches = latestDispatches(ds)
	var det map[string]any
	if json.Unmarshal([]byte(last.Details), &det) == nil && det["covert"] == true {
		v.Covert = true
	}
	return v, true, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// alertOrAnswer finds alert id as u may see it; when it cannot, it
// answers the request (503 when the store failed, 404 when there is no
// such alert for u) and returns false.
func (s *Server) alertOrAnswer(w http.ResponseWriter, r *http.Request, u *User, id string) (alertDetailView, bool) {
	v, ok, err := s.findAlert(r.Context(), u, id)
	switch {
	case err != nil:
		s.error(w, r, http.StatusServiceUnavailable, fmt.Errorf("cannot read the alert: %w", err))
		return v, false
	case !ok:
		s.error(w, r, http.StatusNotFound, errors.New("no such alert"))
		return v, false
	}
	return v, true
}

func (s *Server) alertDetail(w http.ResponseWriter, r *http.Request) {
	u := userOf(r)
	v, ok := s.alertOrAnswer(w, r, u, r.PathValue("id"))
	if !ok {
		return
	}
	now := s.now()
	v.Muted = s.live.mutedKey(muteKey{rule: v.Alert.Rule, subject: v.Alert.Subject.ID, district: v.Alert.District, circle: v.Alert.CircleID}, now)
	v.Timeline = timeline(&v)
	v.Units = s.rankUnits(v.Alert.Lat, v.Alert.Lon, now, 10)
	if v.Messages == nil {
		v.Messages = []alertMessage{}
	}
	if v.Dispatches == nil {
		v.Dispatches = []dispatchView{}
	}
	s.writeJSON(w, http.StatusOK, v)
}

func timeline(v *alertDetailView) []timelineEntry {
	var out []timelineEntry
	for i, m := range v.Messages {
		what := m.Status
		if i == 0 || m.Status == string(event.AlertFiring) {
			what = "raised"
		}
		out = append(out, timelineEntry{Time: m.RaisedAt, What: what})
	}
	for _, d := range v.Dispatches {
		out = append(out, timelineEntry{Time: d.Time, What: d.Status, Unit: d.UnitID})
	}
	op := v.Alert.Op
	if op.ClaimedBy != "" {
		out = append(out, timelineEntry{Time: op.ClaimedAt, What: "claimed", By: op.ClaimedBy})
	}
	if op.AckedBy != "" {
		out = append(out, timelineEntry{Time: op.AckedAt, What: "acked", By: op.AckedBy})
	}
	if op.Closed != nil {
		out = append(out, timelineEntry{Time: op.Closed.At, What: "closed", By: op.Closed.By, Note: op.Closed.Outcome})
	}
	slices.SortStableFunc(out, func(a, b timelineEntry) int { return a.Time.Compare(b.Time) })
	if out == nil {
		out = []timelineEntry{}
	}
	return out
}

// rankUnits returns up to n units by estimated travel time to the point:
// available units with a fresh position first.
func (s *Server) rankUnits(lat, lon float64, now time.Time, n int) []rankedUnit {
	units := s.live.unitsSnapshot()
	out := make([]rankedUnit, 0, len(units))
	for i := range units {
		u := &units[i]
		d := city.DistanceM(u.Lat, u.Lon, lat, lon)
		ru := rankedUnit{ID: u.ID, Status: u.Status, Lat: u.Lat, Lon: u.Lon, DistanceM: float64(int(d)), ETASeconds: float64(int(etaSeconds(d))),
			Available: available(u, now), PositionAge: -1, Seen: u.Time}
		if !u.Time.IsZero() {
			ru.PositionAge = float64(int(now.Sub(u.Time).Seconds()))
			ru.Stale = now.Sub(u.Time) > staleAfter
		} else {
			ru.Stale = true
		}
		if u.Dispatch != nil && !dispatchDone(string(u.Dispatch.Status)) {
			ru.Dispatch = string(u.Dispatch.Status)
		}
		out = append(out, ru)
	}
	slices.SortFunc(out, func(a, b rankedUnit) int {
		if a.Available != b.Available {
			if a.Available {
				return -1
			}
			return 1
		}
		switch {
		case a.ETASeconds < b.ETASeconds:
			return -1
		case a.ETASeconds > b.ETASeconds:
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// Outcomes of closing an alert.
var outcomes = []string{store.OutcomeConfirmed, store.OutcomeFalseAlarm, store.OutcomeDuplicate}

const maxNote = 500

// alertAction claims, acknowledges or closes an alert: audited first, then
// shown to every console.
func (s *Server) alertAction(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u := userOf(r)
		id := r.PathValue("id")
		var req struct {
			Outcome string `json:"outcome"`
			Note    string `json:"note"`
		}
		if r.ContentLength != 0 {
			if err := decodeJSON(r, &req); err != nil {
				s.error(w, r, http.StatusBadRequest, err)
				return
			}
		}
		if kind == "close" && !slices.Contains(outcomes, req.Outcome) {
			s.error(w, r, http.StatusBadRequest, errors.New("outcome: must be confirmed, false_alarm or duplicate"))
			return
		}
		if utf8.RuneCountInString(req.Note) > maxNote {
			s.error(w, r, http.StatusBadRequest, fmt.Errorf("note: at most %d characters", maxNote))
			return
		}
		v, ok := s.alertOrAnswer(w, r, u, id)
		if !ok {
			return
		}
		details := map[string]string{"rule": v.Alert.Rule, "district": v.Alert.District}
		if kind == "close" {
			details["outcome"], details["note"] = req.Outcome, req.Note
		}
		action := "alert." + kind
		if err := s.audit(r.Context(), u.Name, action, id, details); err != nil {
			s.error(w, r, http.StatusServiceUnavailable, err)
			return
		}
		now := s.now()
		s.live.setOp(id, func(op *opState) { applyOp(op, action, u.Name, now, req.Outcome, req.Note) })
		s.writeJSON(w, http.StatusOK, map[string]any{"ok": true, "op": s.live.op(id)})
	}
}

// applyOp records one operator action in op.
func applyOp(op *opState, action, who string, at time.Time, outcome, note string) {
	switch action {
	case "alert.claim":
		op.ClaimedBy, op.ClaimedAt = who, at
	case "alert.ack":
		op.AckedBy, op.AckedAt = who, at
		if op.ClaimedBy == "" {
			op.ClaimedBy, op.ClaimedAt = who, at
		}
	case store.AuditClose:
		op.Closed = &closeOp{Outcome: outcome, Note: note, By: who, At: at}
	}
}

// manualDispatchID is the deterministic id of a dispatch made by hand for
// alert and unit.
func manualDispatchID(alertID, unitID string) string {
	sum := sha256.Sum256([]byte("manual\x00" + alertID + "\x00" + unitID))
	return "manual-" + hex.EncodeToString(sum[:12])
}

// dispatchByHand sends another unit: an assigned message on
// citywatch.dispatches, as the dispatcher writes them.
func (s *Server) dispatchByHand(w http.ResponseWriter, r *http.Request) {
	u := userOf(r)
	var req struct {
		UnitID string `json:"unit_id"`
	}
	if err := decodeJSON(r, &req); err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	unit, ok := s.live.unit(req.UnitID)
	if req.UnitID == "" || !ok {
		s.error(w, r, http.StatusBadRequest, errors.New("unit_id: no such unit"))
		return
	}
	if s.writer == nil {
		s.error(w, r, http.StatusServiceUnavailable, errNoKafka)
		return
	}
	id := r.PathValue("id")
	v, ok := s.alertOrAnswer(w, r, u, id)
	if !ok {
		return
	}
	now := s.now()
	dist := city.DistanceM(unit.Lat, unit.Lon, v.Alert.Lat, v.Alert.Lon)
	d := event.Dispatch{ID: manualDispatchID(id, unit.ID), AlertID: id, UnitID: unit.ID, Status: event.DispatchAssigned, Time: now,
		ETASeconds: float64(int(etaSeconds(dist))), DistanceM: float64(int(dist)), CircleID: v.Alert.CircleID, TierMinutes: v.Alert.TierMinutes}
	if err := s.audit(r.Context(), u.Name, "alert.dispatch", id, map[string]string{"unit_id": unit.ID, "dispatch_id": d.ID, "rule": v.Alert.Rule, "district": v.Alert.District}); err != nil {
		s.error(w, r, http.StatusServiceUnavailable, err)
		return
	}
	if err := s.write(r.Context(), kafkaio.TopicDispatches, unit.ID, d.AppendJSON(nil)); err != nil {
		s.error(w, r, http.StatusServiceUnavailable, err)
		return
	}
	s.writeJSON(w, http.StatusOK, viewDispatch(&d))
}

// write sends one message to topic.
func (s *Server) write(ctx context.Context, topic, key string, value []byte) error {
	if s.writer == nil {
		return errNoKafka
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.writer.WriteMessages(ctx, kafka.Message{Topic: s.kafka.Topic(topic), Key: []byte(key), Value: value}); err != nil {
		return fmt.Errorf("cannot write to %s: %w", s.kafka.Topic(topic), err)
	}
	return nil
}

// unmaskView is what an unmasking returns. citywatch never holds a raw
// identity number or name: ingest replaces them with a keyed pseudonym
// and masked forms before anything is stored or sent on. So the answer is
// what exists here (the pseudonym and the masked forms) and the audit
// reference under which the source system (the fuel real-name platform)
// resolves the pseudonym to a person, by its own procedure.
type unmaskView struct {
	AlertID         string    `json:"alert_id"`
	Pseudonym       string    `json:"pseudonym"`
	BuyerIDMasked   string    `json:"buyer_id_masked"`
	BuyerNameMasked string    `json:"buyer_name_masked"`
	AuditRef        string    `json:"audit_ref"`
	RequestedBy     string    `json:"requested_by"`
	RequestedAt     time.Time `json:"requested_at"`
	Note            string    `json:"note"`
}

const unmaskNote = "citywatch holds no raw identity numbers or names (CONTRACT.md section 2): this is everything it has. " +
	"To identify the person, send the pseudonym and this audit reference to the fuel real-name source system."

func (s *Server) unmask(w http.ResponseWriter, r *http.Request) {
	u := userOf(r)
	var req struct {
		Reason string `json:"reason"`
	}
	if err := decodeJSON(r, &req); err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	if n := utf8.RuneCountInString(strings.TrimSpace(req.Reason)); n < 5 || n > maxNote {
		s.error(w, r, http.StatusBadRequest, errors.New("reason: state why (5 to 500 characters)"))
		return
	}
	id := r.PathValue("id")
	v, ok := s.alertOrAnswer(w, r, u, id)
	if !ok {
		return
	}
	if v.Alert.Subject.Kind != event.SubjectPerson {
		s.error(w, r, http.StatusBadRequest, errors.New("the alert is not about a person"))
		return
	}
	now := s.now()
	ref := newID("unmask-")
	if err := s.audit(r.Context(), u.Name, "identity.unmask", id, map[string]string{"reason": req.Reason, "pseudonym": v.Alert.Subject.ID, "audit_ref": ref}); err != nil {
		s.error(w, r, http.StatusServiceUnavailable, err)
		return
	}
	var det map[string]any
	_ = json.Unmarshal(v.Alert.Details, &det)
	str := func(k string) string { x, _ := det[k].(string); return x }
	s.writeJSON(w, http.StatusOK, unmaskView{AlertID: id, Pseudonym: v.Alert.Subject.ID, BuyerIDMasked: str("buyer_id_masked"),
		BuyerNameMasked: str("buyer_name_masked"), AuditRef: ref, RequestedBy: u.Name, RequestedAt: now, Note: unmaskNote})
}

func (s *Server) listMutes(w http.ResponseWriter, r *http.Request) {
	ms := s.live.activeMutes(s.now())
	if ms == nil {
		ms = []Mute{}
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"mutes": ms})
}

// addMute hides a rule's alerts for a device or an area for some minutes.
func (s *Server) addMute(w http.ResponseWriter, r *http.Request) {
	u := userOf(r)
	var req struct {
		Rule    string `json:"rule"`
		Device  string `json:"device"`
		Area    string `json:"area"`
		Minutes int    `json:"minutes"`
		Reason  string `json:"reason"`
	}
	if err := decodeJSON(r, &req); err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	switch {
	case req.Rule == "" || len(req.Rule) > 128:
		s.error(w, r, http.StatusBadRequest, errors.New("rule: required"))
		return
	case (req.Device == "") == (req.Area == ""):
		s.error(w, r, http.StatusBadRequest, errors.New("device or area: give exactly one"))
		return
	case req.Minutes < 1 || req.Minutes > 7*24*60:
		s.error(w, r, http.StatusBadRequest, errors.New("minutes: must be 1 to 10080"))
		return
	case utf8.RuneCountInString(req.Reason) > maxNote:
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("reason: at most %d characters", maxNote))
		return
	}
	if req.Area != "" && !u.sees(req.Area) && s.city.Circle(req.Area) == nil {
		s.error(w, r, http.StatusForbidden, errors.New("area: outside your districts"))
		return
	}
	now := s.now()
	m := Mute{ID: newID("mute-"), Rule: req.Rule, Device: req.Device, Area: req.Area, Until: now.Add(time.Duration(req.Minutes) * time.Minute), Reason: req.Reason, By: u.Name, Created: now}
	if err := s.audit(r.Context(), u.Name, "alert.mute", m.ID, m); err != nil {
		s.error(w, r, http.StatusServiceUnavailable, err)
		return
	}
	s.live.addMute(m, now)
	s.writeJSON(w, http.StatusOK, m)
}

// restore reapplies the recent operators' actions and mutes from the
// audit log, so that a restart shows what the consoles had.
func (s *Server) restore(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	now := s.now()
	entries, err := s.db.AuditSince(ctx, now.Add(-max(s.cfg.Lookback, 7*24*time.Hour)), 100000, "alert.claim", "alert.ack", store.AuditClose, "alert.mute")
	if err != nil {
		s.log.Warn("cannot restore operators' actions", "err", err)
		return
	}
	for _, e := range entries {
		if e.Action == "alert.mute" {
			var m Mute
			if json.Unmarshal([]byte(e.Details), &m) == nil && now.Before(m.Until) {
				s.live.addMute(m, now)
			}
			continue
		}
		var d map[string]string
		_ = json.Unmarshal([]byte(e.Details), &d)
		s.live.setOp(e.Object, func(op *opState) { applyOp(op, e.Action, e.Who, e.Time, d["outcome"], d["note"]) })
	}
}

func (s *Server) listDispatches(w http.ResponseWriter, r *http.Request) {
	u := userOf(r)
	unit := r.URL.Query().Get("unit")
	active := r.URL.Query().Get("active") == "1"
	rows := s.live.rows(func(a *event.Alert) bool { return u.sees(a.District) })
	out := []dispatchView{}
	for _, a := range rows {
		for _, d := range a.Dispatches {
			if (unit == "" || d.UnitID == unit) && (!active || !dispatchDone(d.Status)) {
				out = append(out, d)
			}
		}
	}
	slices.SortFunc(out, func(a, b dispatchView) int { return b.Time.Compare(a.Time) })
	s.writeJSON(w, http.StatusOK, map[string]any{"dispatches": out})
}

func (s *Server) districtName(code string) string {
	if d := s.city.District(code); d != nil {
		return d.Name
	}
	return code
}

type unitView struct {
	ID           string        `json:"id"`
	Class        string        `json:"class"`
	District     string        `json:"district"`
	Circle       string        `json:"circle"`
	Lat          float64       `json:"lat"`
	Lon          float64       `json:"lon"`
	Status       string        `json:"status"`
	PositionTime time.Time     `json:"position_time,omitzero"`
	PositionAge  float64       `json:"position_age_s"` // -1: none seen
	Stale        bool          `json:"stale"`
	Available    bool          `json:"available"`
	Dispatch     *dispatchView `json:"dispatch"`
}

func (s *Server) listUnits(w http.ResponseWriter, r *http.Request) {
	u := userOf(r)
	now := s.now()
	out := []unitView{}
	for _, st := range s.live.unitsSnapshot() {
		v := unitView{ID: st.ID, Lat: st.Lat, Lon: st.Lon, Status: st.Status, PositionTime: st.Time, PositionAge: -1, Stale: true, Available: available(&st, now)}
		if d := s.city.Device(st.ID); d != nil {
			v.Class, v.District, v.Circle = d.Class, s.districtName(d.District), d.Circle
		}
		if !u.sees(v.District) {
			continue
		}
		if !st.Time.IsZero() {
			v.PositionAge = float64(int(now.Sub(st.Time).Seconds()))
			v.Stale = now.Sub(st.Time) > staleAfter
		}
		if st.Dispatch != nil {
			dv := viewDispatch(st.Dispatch)
			v.Dispatch = &dv
		}
		out = append(out, v)
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"units": out})
}

type circleView struct {
	ID          string         `json:"id"`
	Name        string         `json:"name"`
	Kind        string         `json:"kind"`
	Lat         float64        `json:"lat"`
	Lon         float64        `json:"lon"`
	RadiusM     float64        `json:"radius_m"`
	TierMinutes int            `json:"tier_minutes"`
	District    string         `json:"district"`
	Units       []string       `json:"units"`
	Coverage    CircleCoverage `json:"coverage"`
}

func (s *Server) listCircles(w http.ResponseWriter, r *http.Request) {
	u := userOf(r)
	cov := map[string]CircleCoverage{}
	for _, c := range s.coverage.Coverage(s.now()) {
		cov[c.CircleID] = c
	}
	out := []circleView{}
	for _, c := range s.city.Circles {
		d := s.districtName(c.District)
		if !u.sees(d) {
			continue
		}
		cv, ok := cov[c.ID]
		if !ok {
			cv = CircleCoverage{CircleID: c.ID, BestETASeconds: -1}
		}
		out = append(out, circleView{ID: c.ID, Name: c.Name, Kind: c.Kind, Lat: c.Lat, Lon: c.Lon, RadiusM: c.RadiusM, TierMinutes: c.TierMinutes,
			District: d, Units: nonNil(c.Units), Coverage: cv})
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"circles": out})
}

type deviceView struct {
	ID       string  `json:"id"`
	Kind     string  `json:"kind"`
	Class    string  `json:"class"`
	Lat      float64 `json:"lat"`
	Lon      float64 `json:"lon"`
	District string  `json:"district"`
}

// listDevices answers a summary of the registry by default; kind= lists
// the devices of one kind (at most limit, default 1000); layer=density the
// camera grid.
func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	u := userOf(r)
	if q.Get("layer") == "density" {
		cell := 0.01
		if v := q.Get("cell"); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || !slices.Contains(densityCellDeg, f) {
				s.error(w, r, http.StatusBadRequest, fmt.Errorf("cell: one of %v", densityCellDeg))
				return
			}
			cell = f
		}
		s.writeJSON(w, http.StatusOK, map[string]any{"cell_deg": cell, "cells": s.density.get(s.city, cell)})
		return
	}
	if kind := q.Get("kind"); kind != "" {
		if !slices.Contains(city.Kinds, city.Kind(kind)) {
			s.error(w, r, http.StatusBadRequest, errors.New("kind: camera, checkpoint, fuel_terminal, drone or unit"))
			return
		}
		limit := 1000
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 30000 {
				s.error(w, r, http.StatusBadRequest, errors.New("limit: must be 1 to 30000"))
				return
			}
			limit = n
		}
		out := []deviceView{}
		for _, d := range s.city.DevicesOf(city.Kind(kind)) {
			name := s.districtName(d.District)
			if !u.sees(name) {
				continue
			}
			if len(out) >= limit {
				break
			}
			out = append(out, deviceView{ID: d.ID, Kind: string(d.Kind), Class: d.Class, Lat: d.Lat, Lon: d.Lon, District: name})
		}
		s.writeJSON(w, http.StatusOK, map[string]any{"devices": out})
		return
	}
	byKind, byClass, byDistrict := map[string]int{}, map[string]int{}, map[string]int{}
	total := 0
	for i := range s.city.Devices {
		d := &s.city.Devices[i]
		total++
		byKind[string(d.Kind)]++
		if d.Class != "" {
			byClass[string(d.Kind)+"/"+d.Class]++
		}
		byDistrict[s.districtName(d.District)]++
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"total": total, "by_kind": byKind, "by_class": byClass, "by_district": byDistrict})
}

// districts answers the district outlines as a GeoJSON FeatureCollection.
func (s *Server) districts(w http.ResponseWriter, r *http.Request) {
	type feature struct {
		Type       string         `json:"type"`
		Properties map[string]any `json:"properties"`
		Geometry   map[string]any `json:"geometry"`
	}
	fc := struct {
		Type     string    `json:"type"`
		Features []feature `json:"features"`
	}{Type: "FeatureCollection", Features: []feature{}}
	for _, d := range s.city.Districts {
		fc.Features = append(fc.Features, feature{Type: "Feature",
			Properties: map[string]any{"code": d.Code, "name": d.Name, "urban": d.Urban, "lat": d.Lat, "lon": d.Lon},
			Geometry:   map[string]any{"type": "MultiPolygon", "coordinates": d.Polygons}})
	}
	w.Header().Set("Cache-Control", "private, max-age=3600")
	s.writeJSON(w, http.StatusOK, fc)
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	checks, ok := s.runChecks(r.Context())
	alerts, units, last := s.live.stats()
	lastOut := map[string]time.Time{}
	for k, v := range last {
		lastOut[k] = v
	}
	if checks == nil {
		checks = []checkResult{}
	}
	roles := s.roles
	if roles == nil {
		roles = []string{}
	}
	s.writeJSON(w, http.StatusOK, map[string]any{
		"ok": ok, "roles": roles, "checks": checks,
		"live":  map[string]any{"alerts": alerts, "units": units, "feed_clients": s.hub.clientCount(), "feed_seq": s.hub.lastSeq(), "last_message": lastOut},
		"kafka": s.kafka != nil, "clickhouse": s.db != nil, "time": s.now(),
	})
}

var statusTemplate = template.Must(template.New("status").Parse(`<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>citywatch</title>
<link rel="stylesheet" href="/static/app.css"></head>
<body class="doc"><h1>citywatch 城市安防实时处理</h1>
<p>运行中的角色 (roles): {{range .Roles}}<code>{{.}}</code> {{end}}</p>
<h2>依赖 (dependencies)</h2><ul>{{range .Checks}}<li>{{.Name}}: {{if .Error}}<span class="bad">{{.Error}}</span>{{else}}ok{{end}}</li>{{end}}</ul>
<p><a href="/metrics">/metrics</a> · <a href="/readyz">/readyz</a> · <a href="/healthz">/healthz</a> · <a href="/openapi.yaml">/openapi.yaml</a></p>
</body></html>`))

var homeTemplate = template.Must(template.New("home").Parse(`<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>citywatch</title>
<link rel="stylesheet" href="/static/app.css"></head>
<body class="doc"><h1>citywatch 城市安防实时处理</h1>
<p>运行中的角色 (roles): {{range .}}<code>{{.}}</code> {{end}}</p>
<p><a href="/login">登录 · Log in</a></p>
</body></html>`))
