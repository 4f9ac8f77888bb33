package rules

import (
	"time"

	"citywatch/event"
)

// MatchSpec is a match rule: every event that passes the rule's types and
// filter raises an alert for its key, or, with a list, every event whose
// key is on the list (vehicle_hotlist for plates, person_watchlist for
// buyers).
//
//	match: {key: plate, list: vehicle_hotlist}
//	match: {key: device, resolve: 'status == "ok"'}
type MatchSpec struct {
	// Key is the subject: device (default), plate, buyer or station.
	Key string `yaml:"key"`
	// List is vehicle_hotlist or person_watchlist; empty for none.
	List string `yaml:"list"`
	// Resolve is an expression: an event of the rule's types and the same
	// key that satisfies it resolves the open alert (a camera reporting
	// "ok" again). Without it, alerts resolve after the suppression window
	// passes quietly.
	Resolve string `yaml:"resolve"`
}

type matchRule struct {
	key     keyField
	list    string
	resolve *filter
}

func (s *MatchSpec) compile(Lists) (kindSpec, error) {
	def := "device"
	switch s.List {
	case ListVehicleHotlist:
		def = "plate"
	case ListPersonWatchlist:
		def = "buyer"
	case "":
	default:
		return nil, &fieldError{field: "list", msg: "must be " + ListVehicleHotlist + " or " + ListPersonWatchlist + ", got " + quote(s.List)}
	}
	k, err := compileKey(s.Key, def)
	if err != nil {
		return nil, err
	}
	if s.List != "" && k.name != def {
		return nil, &fieldError{field: "key", msg: s.List + " is matched by key " + def}
	}
	m := &matchRule{key: k, list: s.List}
	if m.resolve, err = compileFilter(s.Resolve); err != nil {
		return nil, &fieldError{field: "resolve", msg: oneLine(err.Error())}
	}
	return m, nil
}

func (m *matchRule) window() time.Duration { return 0 }

func (m *matchRule) newState(*Config) kindState { return &matchState{m: m} }

// matchState holds nothing beyond the open alerts the engine keeps.
type matchState struct{ m *matchRule }

func (s *matchState) size() (int, int, uint64) { return 0, 0, 0 }

func (s *matchState) tick(*evalCtx) {}

func (s *matchState) process(x *evalCtx, e *event.Event) {
	m := s.m
	key := m.key.get(e)
	if key == "" {
		return
	}
	if m.resolve != nil && x.run.sits.len() > 0 && x.eval(m.resolve, e) {
		x.resolve(event.Subject{Kind: m.key.subject, ID: key}, e, nil)
		return
	}
	var h hit
	switch m.list {
	case ListVehicleHotlist:
		en, diffs, ok := x.eng.rs.lists.Hotlist.Match(key, e.PlateValid)
		if !ok {
			return
		}
		key = en.Plate
		h.severity = en.Severity
		h.details = []event.Detail{
			{Name: "plate_read", Value: e.Plate},
			{Name: "listed_plate", Value: en.Plate},
			{Name: "lookalike_diffs", Value: diffs},
			{Name: "reason", Value: en.Reason},
			{Name: "covert", Value: en.Covert},
			{Name: "device_id", Value: e.DeviceID},
			{Name: "confidence", Value: e.Confidence},
		}
	case ListPersonWatchlist:
		en, ok := x.eng.rs.lists.Watchlist.Match(key)
		if !ok {
			return
		}
		h.severity = en.Severity
		h.details = []event.Detail{
			{Name: "reason", Value: en.Reason},
			{Name: "buyer_id_masked", Value: e.BuyerIDMasked},
			{Name: "station_id", Value: e.StationID},
			{Name: "volume_l", Value: e.VolumeL},
			{Name: "container", Value: e.Container},
		}
	default:
		h.details = eventDetails(e)
	}
	h.subject = event.Subject{Kind: m.key.subject, ID: key}
	h.e, h.evidence = e, []string{e.ID}
	x.raise(&h)
}

// unmatched sees the events the rule's filter rejected: one of them may
// resolve an open alert.
func (s *matchState) unmatched(x *evalCtx, e *event.Event) {
	if s.m.resolve == nil || x.run.sits.len() == 0 {
		return
	}
	key := s.m.key.get(e)
	if key == "" || !x.eval(s.m.resolve, e) {
		return
	}
	x.resolve(event.Subject{Kind: s.m.key.subject, ID: key}, e, nil)
}

// eventDetails are the figures of an event worth showing with an alert it
// raised.
func eventDetails(e *event.Event) []event.Detail {
	d := []event.Detail{{Name: "type", Value: e.Type.String()}, {Name: "device_id", Value: e.DeviceID}}
	switch e.Type {
	case event.TypeCameraDetection, event.TypeDroneDetection:
		d = append(d, event.Detail{Name: "object", Value: e.Object})
		if e.Behavior != "" {
			d = append(d, event.Detail{Name: "behavior", Value: e.Behavior})
		}
		d = append(d, event.Detail{Name: "count", Value: e.Count}, event.Detail{Name: "confidence", Value: e.Confidence})
		if e.Plate != "" {
			d = append(d, event.Detail{Name: "plate", Value: e.Plate})
		}
	case event.TypeCameraHealth:
		d = append(d, event.Detail{Name: "status", Value: e.Status})
		if e.Detail != "" {
			d = append(d, event.Detail{Name: "detail", Value: e.Detail})
		}
	case event.TypeCheckpointPass:
		d = append(d, event.Detail{Name: "plate", Value: e.Plate}, event.Detail{Name: "speed_kmh", Value: e.SpeedKmh})
	case event.TypeFuelPurchase:
		d = append(d, event.Detail{Name: "station_id", Value: e.StationID}, event.Detail{Name: "buyer_id_masked", Value: e.BuyerIDMasked},
			event.Detail{Name: "container", Value: e.Container}, event.Detail{Name: "volume_l", Value: e.VolumeL}, event.Detail{Name: "permit_no", Value: e.PermitNo})
	case event.TypeDroneTelemetry:
		d = append(d, event.Detail{Name: "mission_id", Value: e.MissionID}, event.Detail{Name: "battery_pct", Value: e.BatteryPct})
	}
	return d
}
