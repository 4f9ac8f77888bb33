package event

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Severity is how urgent an alert is.
type Severity string

// The severities of CONTRACT.md section 3.
const (
	SeverityCritical Severity = "critical"
	SeverityHigh     Severity = "high"
	SeverityMedium   Severity = "medium"
	SeverityLow      Severity = "low"
)

// Valid reports whether s is one of the four severities.
func (s Severity) Valid() bool {
	switch s {
	case SeverityCritical, SeverityHigh, SeverityMedium, SeverityLow:
		return true
	}
	return false
}

// AlertStatus is where an alert message stands in the alert's lifecycle.
type AlertStatus string

// The lifecycle of an alert: one firing message, any number of updated
// messages (more evidence for the same situation), one resolved message.
const (
	AlertFiring   AlertStatus = "firing"
	AlertUpdated  AlertStatus = "updated"
	AlertResolved AlertStatus = "resolved"
)

// Subject kinds of CONTRACT.md section 3.
const (
	SubjectPlate  = "plate"
	SubjectPerson = "person"
	SubjectDevice = "device"
	SubjectArea   = "area"
	SubjectZone   = "zone"
	SubjectPair   = "pair"
	SubjectCircle = "circle"
	SubjectAlert  = "alert"
)

// Subject is what an alert is about: a plate, a person (by pseudonym), a
// device, an area (a site or district, for grouped alerts), a zone or a
// pair of plates.
type Subject struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
}

// MaxEvidence is the most event ids an alert carries; the oldest are
// dropped first.
const MaxEvidence = 20

// Alert is one alert message (CONTRACT.md section 3). Messages with the
// same ID are one alert; Status says which step of its lifecycle this one
// is.
type Alert struct {
	ID        string
	Rule      string
	Severity  Severity
	Status    AlertStatus
	Subject   Subject
	EventTime time.Time // device time of the event that raised or last updated it
	RaisedAt  time.Time // when this message was emitted
	Lat, Lon  float64
	// District, CircleID and TierMinutes come from Config.Locate; they are
	// empty and 0 when no city model is configured, and then circle_id and
	// tier_minutes are left out of the JSON form (the dispatcher places the
	// alert itself).
	District    string
	CircleID    string
	TierMinutes int
	Evidence    []string // event ids, newest last, at most MaxEvidence
	Summary     string   // one line in Simplified Chinese
	Details     []Detail // rule-specific figures, in order
}

// Detail is one named figure of an alert's details object. Value is a
// string, bool, int, float64 or []string.
type Detail struct {
	Name  string
	Value any
}

// Detail returns the value of the detail named name, or nil.
func (a *Alert) Detail(name string) any {
	for _, d := range a.Details {
		if d.Name == name {
			return d.Value
		}
	}
	return nil
}

// AlertID returns the deterministic id of the situation that rule raised
// for subject starting at start: the first 16 bytes of SHA-256 over the
// rule id, the subject and the start instant in milliseconds, in hex. The
// same situation gets the same id after a restart or a replay.
func AlertID(rule string, subject Subject, start time.Time) string {
	var buf [256]byte
	b := append(buf[:0], rule...)
	b = append(b, 0)
	b = append(b, subject.Kind...)
	b = append(b, 0)
	b = append(b, subject.ID...)
	b = append(b, 0)
	b = strconv.AppendInt(b, start.UnixMilli(), 10)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// AppendJSON appends the JSON object of a (CONTRACT.md section 3) to dst
// and returns the extended slice. Times are RFC 3339 in UTC with
// milliseconds; event_time keeps the offset of the event. It does not
// allocate when dst has room, except for details of type []string.
func (a *Alert) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = AppendJSONString(dst, a.ID)
	dst = append(dst, `,"rule":`...)
	dst = AppendJSONString(dst, a.Rule)
	dst = append(dst, `,"severity":`...)
	dst = AppendJSONString(dst, string(a.Severity))
	dst = append(dst, `,"status":`...)
	dst = AppendJSONString(dst, string(a.Status))
	dst = append(dst, `,"subject":{"kind":`...)
	dst = AppendJSONString(dst, a.Subject.Kind)
	dst = append(dst, `,"id":`...)
	dst = AppendJSONString(dst, a.Subject.ID)
	dst = append(dst, `},"event_time":"`...)
	dst = a.EventTime.AppendFormat(dst, rfc3339Milli)
	dst = append(dst, `","raised_at":"`...)
	dst = a.RaisedAt.UTC().AppendFormat(dst, rfc3339Milli)
	dst = append(dst, `","lat":`...)
	dst = AppendJSONFloat(dst, a.Lat)
	dst = append(dst, `,"lon":`...)
	dst = AppendJSONFloat(dst, a.Lon)
	dst = append(dst, `,"district":`...)
	dst = AppendJSONString(dst, a.District)
	if a.CircleID != "" || a.TierMinutes != 0 {
		dst = append(dst, `,"circle_id":`...)
		dst = AppendJSONString(dst, a.CircleID)
		dst = append(dst, `,"tier_minutes":`...)
		dst = strconv.AppendInt(dst, int64(a.TierMinutes), 10)
	}
	dst = append(dst, `,"evidence":[`...)
	for i, id := range a.Evidence {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendJSONString(dst, id)
	}
	dst = append(dst, `],"summary":`...)
	dst = AppendJSONString(dst, a.Summary)
	dst = append(dst, `,"details":`...)
	dst = a.AppendDetailsJSON(dst)
	return append(dst, '}')
}

// AppendDetailsJSON appends the details of a as one JSON object, members in
// order, to dst and returns the extended slice.
func (a *Alert) AppendDetailsJSON(dst []byte) []byte {
	dst = append(dst, '{')
	for i, d := range a.Details {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendJSONString(dst, d.Name)
		dst = append(dst, ':')
		dst = appendJSONValue(dst, d.Value)
	}
	return append(dst, '}')
}

const rfc3339Milli = "2006-01-02T15:04:05.000Z07:00"

func appendJSONValue(dst []byte, v any) []byte {
	switch v := v.(type) {
	case string:
		return AppendJSONString(dst, v)
	case bool:
		return strconv.AppendBool(dst, v)
	case int:
		return strconv.AppendInt(dst, int64(v), 10)
	case int64:
		return strconv.AppendInt(dst, v, 10)
	case float64:
		return AppendJSONFloat(dst, v)
	case []string:
		dst = append(dst, '[')
		for i, s := range v {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendJSONString(dst, s)
		}
		return append(dst, ']')
	case nil:
		return append(dst, "null"...)
	}
	// Other types are not produced by the rule kinds; encoding/json keeps
	// the output valid JSON if one appears.
	b, err := json.Marshal(v)
	if err != nil {
		return append(dst, "null"...)
	}
	return append(dst, b...)
}

// wireAlert is the JSON form for DecodeAlert.
type wireAlert struct {
	ID          string          `json:"id"`
	Rule        string          `json:"rule"`
	Severity    Severity        `json:"severity"`
	Status      AlertStatus     `json:"status"`
	Subject     Subject         `json:"subject"`
	EventTime   time.Time       `json:"event_time"`
	RaisedAt    time.Time       `json:"raised_at"`
	Lat         float64         `json:"lat"`
	Lon         float64         `json:"lon"`
	District    string          `json:"district"`
	CircleID    string          `json:"circle_id"`
	TierMinutes int             `json:"tier_minutes"`
	Evidence    []string        `json:"evidence"`
	Summary     string          `json:"summary"`
	Details     json.RawMessage `json:"details"`
}

// DecodeAlert decodes one alert message written by AppendJSON. Numbers in
// details become float64, arrays of strings []string, as they were written.
// It is meant for consumers of citywatch.alerts (dispatch, the sink, tests),
// not for a hot path.
func DecodeAlert(data []byte) (Alert, error) {
	var w wireAlert
	if err := json.Unmarshal(data, &w); err != nil {
		return Alert{}, fmt.Errorf("cannot decode alert: %w", err)
	}
	a := Alert{
		ID: w.ID, Rule: w.Rule, Severity: w.Severity, Status: w.Status, Subject: w.Subject,
		EventTime: w.EventTime, RaisedAt: w.RaisedAt, Lat: w.Lat, Lon: w.Lon,
		District: w.District, CircleID: w.CircleID, TierMinutes: w.TierMinutes,
		Evidence: w.Evidence, Summary: w.Summary,
	}
	if a.ID == "" || a.Rule == "" {
		return Alert{}, errors.New("cannot decode alert: id and rule are required")
	}
	if len(w.Details) > 0 && !bytes.Equal(w.Details, []byte("null")) {
		d, err := decodeDetails(w.Details)
		if err != nil {
			return Alert{}, fmt.Errorf("cannot decode alert details: %w", err)
		}
		a.Details = d
	}
	return a, nil
}

// decodeDetails reads a JSON object keeping the order of its members.
func decodeDetails(raw []byte) ([]Detail, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("details is not an object")
	}
	var out []Detail
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, _ := tok.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		if list, ok := v.([]any); ok {
			ss := make([]string, 0, len(list))
			for _, x := range list {
				s, _ := x.(string)
				ss = append(ss, s)
			}
			v = ss
		}
		out = append(out, Detail{Name: name, Value: v})
	}
	return out, nil
}
