package rules

import (
	"sort"
	"strings"

	"citywatch/event"
)

// Fields of an event that rules may name as a key, a distinct field or a
// summed figure. Names are the wire names of CONTRACT.md section 2, except
// buyer, which is the buyer's pseudonym.
var stringFields = map[string]func(e *event.Event) string{
	"id":            func(e *event.Event) string { return e.ID },
	"device_id":     func(e *event.Event) string { return e.DeviceID },
	"device":        func(e *event.Event) string { return e.DeviceID },
	"plate":         func(e *event.Event) string { return e.Plate },
	"buyer":         func(e *event.Event) string { return e.BuyerPseudonym },
	"station_id":    func(e *event.Event) string { return e.StationID },
	"station":       func(e *event.Event) string { return e.StationID },
	"mission_id":    func(e *event.Event) string { return e.MissionID },
	"track_id":      func(e *event.Event) string { return e.TrackID },
	"object":        func(e *event.Event) string { return e.Object },
	"behavior":      func(e *event.Event) string { return e.Behavior },
	"status":        func(e *event.Event) string { return e.Status },
	"camera_class":  func(e *event.Event) string { return e.CameraClass },
	"plate_color":   func(e *event.Event) string { return e.PlateColor },
	"vehicle_type":  func(e *event.Event) string { return e.VehicleType },
	"vehicle_color": func(e *event.Event) string { return e.VehicleColor },
	"fuel":          func(e *event.Event) string { return e.Fuel },
	"container":     func(e *event.Event) string { return e.Container },
	"permit_no":     func(e *event.Event) string { return e.PermitNo },
	"dispatch_id":   func(e *event.Event) string { return e.DispatchID },
}

var numberFields = map[string]func(e *event.Event) float64{
	"count":       func(e *event.Event) float64 { return float64(e.Count) },
	"volume_l":    func(e *event.Event) float64 { return e.VolumeL },
	"speed_kmh":   func(e *event.Event) float64 { return e.SpeedKmh },
	"confidence":  func(e *event.Event) float64 { return e.Confidence },
	"alt_m":       func(e *event.Event) float64 { return e.AltM },
	"speed_ms":    func(e *event.Event) float64 { return e.SpeedMs },
	"battery_pct": func(e *event.Event) float64 { return e.BatteryPct },
	"lane":        func(e *event.Event) float64 { return float64(e.Lane) },
}

// keyKinds maps the keys a stateful rule may be keyed by to the subject
// kind of its alerts.
var keyKinds = map[string]string{
	"device":  event.SubjectDevice,
	"plate":   event.SubjectPlate,
	"buyer":   event.SubjectPerson,
	"station": event.SubjectArea,
}

// keyField is a compiled key: how to read it and what subject it names.
type keyField struct {
	name    string
	get     func(e *event.Event) string
	subject string
}

func compileKey(name, def string) (keyField, error) {
	if name == "" {
		name = def
	}
	kind, ok := keyKinds[name]
	if !ok {
		return keyField{}, &fieldError{field: "key", msg: "must be one of " + names(keyKinds) + ", got " + quote(name)}
	}
	return keyField{name: name, get: stringFields[name], subject: kind}, nil
}

func names[V any](m map[string]V) string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

func quote(s string) string { return `"` + s + `"` }
