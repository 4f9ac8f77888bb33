package web

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"time"

	"citywatch/event"
	"citywatch/internal/kafkaio"
)

// patrolAlert is what a patrol unit is told of the alert it is sent to.
// A covert hotlist hit (details covert: true) tells where to go, not why.
type patrolAlert struct {
	ID       string  `json:"id"`
	Rule     string  `json:"rule"`
	Severity string  `json:"severity"`
	Summary  string  `json:"summary"`
	Lat      float64 `json:"lat"`
	Lon      float64 `json:"lon"`
	District string  `json:"district"`
	Covert   bool    `json:"covert"`
}

type patrolView struct {
	Unit     unitView      `json:"unit"`
	Dispatch *dispatchView `json:"dispatch"`
	Alert    *patrolAlert  `json:"alert"`
}

// covertSummary replaces the summary of a covert hit on the patrol page.
const covertSummary = "前往指定地点执行核查任务（保密任务，原因不予显示）"

// patrolCurrent answers the logged-in unit's state and its current
// dispatch with the alert it is for.
func (s *Server) patrolCurrent(w http.ResponseWriter, r *http.Request) {
	u := userOf(r)
	st, ok := s.live.unit(u.Unit)
	if !ok {
		s.error(w, r, http.StatusNotFound, fmt.Errorf("unit %s is not known", u.Unit))
		return
	}
	now := s.now()
	v := patrolView{Unit: unitView{ID: st.ID, Lat: st.Lat, Lon: st.Lon, Status: st.Status, PositionTime: st.Time, PositionAge: -1, Stale: true, Available: available(&st, now)}}
	if d := s.city.Device(st.ID); d != nil {
		v.Unit.Class, v.Unit.District, v.Unit.Circle = d.Class, s.districtName(d.District), d.Circle
	}
	if !st.Time.IsZero() {
		v.Unit.PositionAge = float64(int(now.Sub(st.Time).Seconds()))
		v.Unit.Stale = now.Sub(st.Time) > staleAfter
	}
	if st.Dispatch != nil {
		dv := viewDispatch(st.Dispatch)
		v.Dispatch = &dv
		if sit, ok := s.live.detail(st.Dispatch.AlertID); ok {
			a := &sit.latest
			pa := &patrolAlert{ID: a.ID, Rule: a.Rule, Severity: string(a.Severity), Summary: a.Summary, Lat: a.Lat, Lon: a.Lon, District: a.District}
			if a.Detail("covert") == true {
				pa.Covert, pa.Summary, pa.Rule = true, covertSummary, ""
			}
			v.Alert = pa
		}
	}
	s.writeJSON(w, http.StatusOK, v)
}

// patrolAnswers are the statuses a unit may send (CONTRACT.md section 2).
var patrolAnswers = []string{"accepted", "declined", "en_route", "on_scene", "cleared"}

// patrolStatus sends the unit's answer to its dispatch as a patrol.status
// event on citywatch.patrol, keyed by the unit id; the dispatcher turns it
// into the dispatch's next state.
func (s *Server) patrolStatus(w http.ResponseWriter, r *http.Request) {
	u := userOf(r)
	var req struct {
		DispatchID string   `json:"dispatch_id"`
		Status     string   `json:"status"`
		Lat        *float64 `json:"lat"`
		Lon        *float64 `json:"lon"`
	}
	if err := decodeJSON(r, &req); err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	if !slices.Contains(patrolAnswers, req.Status) {
		s.error(w, r, http.StatusBadRequest, errors.New("status: accepted, declined, en_route, on_scene or cleared"))
		return
	}
	st, ok := s.live.unit(u.Unit)
	if !ok {
		s.error(w, r, http.StatusNotFound, fmt.Errorf("unit %s is not known", u.Unit))
		return
	}
	if req.DispatchID == "" || st.Dispatch == nil || st.Dispatch.ID != req.DispatchID {
		s.error(w, r, http.StatusConflict, errors.New("dispatch_id: not this unit's current dispatch"))
		return
	}
	lat, lon := st.Lat, st.Lon
	if req.Lat != nil && req.Lon != nil {
		if !validLatLon(*req.Lat, *req.Lon) {
			s.error(w, r, http.StatusBadRequest, errors.New("lat, lon: out of range"))
			return
		}
		lat, lon = *req.Lat, *req.Lon
	}
	now := s.now()
	e := event.Event{ID: newID("web-"), Type: event.TypePatrolStatus, DeviceID: u.Unit, Time: now.Truncate(time.Millisecond), Lat: lat, Lon: lon,
		DispatchID: req.DispatchID, Status: req.Status}
	if err := s.audit(r.Context(), u.Name, "patrol.status", req.DispatchID, map[string]string{"unit_id": u.Unit, "status": req.Status, "event_id": e.ID}); err != nil {
		s.error(w, r, http.StatusServiceUnavailable, err)
		return
	}
	if err := s.write(r.Context(), kafkaio.TopicPatrol, u.Unit, event.AppendJSON(nil, &e)); err != nil {
		s.error(w, r, http.StatusServiceUnavailable, err)
		return
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"ok": true, "event_id": e.ID})
}

func validLatLon(lat, lon float64) bool {
	return !math.IsNaN(lat) && !math.IsNaN(lon) && lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180
}

// patrolPosition sends the browser's position as a patrol.position event.
// Position reports are telemetry, not actions, and are not audited.
func (s *Server) patrolPosition(w http.ResponseWriter, r *http.Request) {
	u := userOf(r)
	var req struct {
		Lat        float64 `json:"lat"`
		Lon        float64 `json:"lon"`
		SpeedKmh   float64 `json:"speed_kmh"`
		HeadingDeg float64 `json:"heading_deg"`
		Status     string  `json:"status"`
	}
	if err := decodeJSON(r, &req); err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	switch {
	case !validLatLon(req.Lat, req.Lon):
		s.error(w, r, http.StatusBadRequest, errors.New("lat, lon: out of range"))
		return
	case req.SpeedKmh < 0 || req.SpeedKmh > 400 || math.IsNaN(req.SpeedKmh):
		s.error(w, r, http.StatusBadRequest, errors.New("speed_kmh: 0 to 400"))
		return
	case req.HeadingDeg < 0 || req.HeadingDeg > 360 || math.IsNaN(req.HeadingDeg):
		s.error(w, r, http.StatusBadRequest, errors.New("heading_deg: 0 to 360"))
		return
	case !slices.Contains([]string{"available", "busy", "off_duty"}, req.Status):
		s.error(w, r, http.StatusBadRequest, errors.New("status: available, busy or off_duty"))
		return
	}
	e := event.Event{ID: newID("web-"), Type: event.TypePatrolPosition, DeviceID: u.Unit, Time: s.now().Truncate(time.Millisecond),
		Lat: req.Lat, Lon: req.Lon, SpeedKmh: req.SpeedKmh, HeadingDeg: req.HeadingDeg, HasHeading: true, Status: req.Status}
	if err := s.write(r.Context(), kafkaio.TopicPatrol, u.Unit, event.AppendJSON(nil, &e)); err != nil {
		s.error(w, r, http.StatusServiceUnavailable, err)
		return
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"ok": true, "event_id": e.ID})
}
