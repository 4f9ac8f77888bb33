package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// DispatchStatus is where a dispatch stands (CONTRACT.md section 4).
type DispatchStatus string

// The states of a dispatch. Assigned, reassigned, escalated and breached
// are decided by citywatch; accepted, declined, en_route, on_scene and
// cleared are the unit's answers (patrol.status) as citywatch recorded
// them.
const (
	DispatchAssigned   DispatchStatus = "assigned"
	DispatchAccepted   DispatchStatus = "accepted"
	DispatchDeclined   DispatchStatus = "declined"
	DispatchEnRoute    DispatchStatus = "en_route"
	DispatchOnScene    DispatchStatus = "on_scene"
	DispatchCleared    DispatchStatus = "cleared"
	DispatchReassigned DispatchStatus = "reassigned"
	DispatchEscalated  DispatchStatus = "escalated"
	DispatchBreached   DispatchStatus = "breached"
)

// Valid reports whether s is one of the states of CONTRACT.md section 4.
func (s DispatchStatus) Valid() bool {
	switch s {
	case DispatchAssigned, DispatchAccepted, DispatchDeclined, DispatchEnRoute, DispatchOnScene,
		DispatchCleared, DispatchReassigned, DispatchEscalated, DispatchBreached:
		return true
	}
	return false
}

// Dispatch is one message of citywatch.dispatches (CONTRACT.md section 4):
// a dispatch order or one change of its state. Messages with the same ID
// are one dispatch.
type Dispatch struct {
	ID          string
	AlertID     string
	UnitID      string // empty for an escalation that found no unit
	Status      DispatchStatus
	Time        time.Time // when this state was reached
	ETASeconds  float64   // estimate at assignment
	DistanceM   float64   // estimate at assignment
	CircleID    string
	TierMinutes int
}

// AppendJSON appends the JSON object of d to dst and returns the extended
// slice. Time is RFC 3339 in UTC with milliseconds.
func (d *Dispatch) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = AppendJSONString(dst, d.ID)
	dst = append(dst, `,"alert_id":`...)
	dst = AppendJSONString(dst, d.AlertID)
	dst = append(dst, `,"unit_id":`...)
	dst = AppendJSONString(dst, d.UnitID)
	dst = append(dst, `,"status":`...)
	dst = AppendJSONString(dst, string(d.Status))
	dst = append(dst, `,"time":"`...)
	dst = d.Time.UTC().AppendFormat(dst, rfc3339Milli)
	dst = append(dst, `","eta_s":`...)
	dst = AppendJSONFloat(dst, d.ETASeconds)
	dst = append(dst, `,"distance_m":`...)
	dst = AppendJSONFloat(dst, d.DistanceM)
	dst = append(dst, `,"circle_id":`...)
	dst = AppendJSONString(dst, d.CircleID)
	dst = append(dst, `,"tier_minutes":`...)
	dst = strconv.AppendInt(dst, int64(d.TierMinutes), 10)
	return append(dst, '}')
}

type wireDispatch struct {
	ID          string         `json:"id"`
	AlertID     string         `json:"alert_id"`
	UnitID      string         `json:"unit_id"`
	Status      DispatchStatus `json:"status"`
	Time        time.Time      `json:"time"`
	ETASeconds  float64        `json:"eta_s"`
	DistanceM   float64        `json:"distance_m"`
	CircleID    string         `json:"circle_id"`
	TierMinutes int            `json:"tier_minutes"`
}

// DecodeDispatch decodes one message of citywatch.dispatches. The id,
// alert_id, a valid status and the time are required.
func DecodeDispatch(data []byte) (Dispatch, error) {
	var w wireDispatch
	if err := json.Unmarshal(data, &w); err != nil {
		return Dispatch{}, fmt.Errorf("cannot decode dispatch: %w", err)
	}
	if w.ID == "" || w.AlertID == "" {
		return Dispatch{}, errors.New("cannot decode dispatch: id and alert_id are required")
	}
	if !w.Status.Valid() {
		return Dispatch{}, fmt.Errorf("cannot decode dispatch %s: unknown status %q", w.ID, w.Status)
	}
	if w.Time.IsZero() {
		return Dispatch{}, fmt.Errorf("cannot decode dispatch %s: time is required", w.ID)
	}
	return Dispatch(w), nil
}
