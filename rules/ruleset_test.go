package rules

import (
	"strings"
	"testing"

	"citywatch/event"
)

func testPseudonymizer(t testing.TB) *event.Pseudonymizer {
	t.Helper()
	p, err := event.NewPseudonymizer([]byte(TestPseudonymKey))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultRuleSetHasContractRules(t *testing.T) {
	rs, err := DefaultRuleSet(testPseudonymizer(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"vehicle.hotlist", "vehicle.cloned_plate", "vehicle.companion", "person.watchlist",
		"fuel.bulk_repeat", "fuel.bulk_no_permit", "crowd.gathering", "camera.violence",
		"zone.night_intrusion", "device.offline", "camera.video_fault", "drone.detection",
		"drone.link_lost",
	}
	got := rs.Rules()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("rules = %v, want %v", got, want)
	}
}

// TestParseErrors checks that a bad rule file is rejected with an error
// naming the rule and the field.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, file string
		want       []string // substrings of the error
	}{
		{"unknown top field", `
rules:
  - id: a.b
    severity: high
    severty: low
    match: {}
`, []string{`rule "a.b"`, "line 5", "severty", "unknown field"}},
		{"unknown kind field", `
rules:
  - id: first
    severity: high
    match: {}
  - id: second
    severity: high
    threshold: {key: device, window: 5m, cont: 3}
`, []string{`rule "second"`, "threshold.cont", "unknown field"}},
		{"no kind", `
rules:
  - id: x
    severity: high
`, []string{`rule "x"`, "kind"}},
		{"two kinds", `
rules:
  - id: x
    severity: high
    match: {}
    velocity: {max_kmh: 1, within: 1h}
`, []string{`rule "x"`, "more than one"}},
		{"bad severity", `
rules:
  - id: x
    severity: urgent
    match: {}
`, []string{`rule "x"`, "severity"}},
		{"bad type", `
rules:
  - id: x
    severity: low
    types: [camera.detect]
    match: {}
`, []string{`rule "x"`, "types", "camera.detect"}},
		{"bad filter", `
rules:
  - id: x
    severity: low
    filter: behaviour == "fight"
    match: {}
`, []string{`rule "x"`, "filter"}},
		{"filter not bool", `
rules:
  - id: x
    severity: low
    filter: count + 1
    match: {}
`, []string{`rule "x"`, "filter"}},
		{"duplicate id", `
rules:
  - {id: x, severity: low, match: {}}
  - {id: x, severity: low, match: {}}
`, []string{`rule "x"`, "duplicate"}},
		{"bad id", `
rules:
  - {id: "a b", severity: low, match: {}}
`, []string{"id"}},
		{"bad duration", `
rules:
  - {id: x, severity: low, threshold: {window: 5 minutes, count: 3}}
`, []string{`rule "x"`}},
		{"bad summary", `
rules:
  - {id: x, severity: low, summary: "a {b", match: {}}
`, []string{`rule "x"`, "summary"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load([]byte(tt.file), Lists{})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestKindErrors checks each kind's parameter validation: the error names
// the rule and the kind's field.
func TestKindErrors(t *testing.T) {
	tests := []struct{ kind, field string }{
		{`match: {list: plates}`, "match.list"},
		{`match: {key: colour}`, "match.key"},
		{`match: {list: vehicle_hotlist, key: device}`, "match.key"},
		{`match: {resolve: "status =="}`, "match.resolve"},
		{`threshold: {count: 3}`, "threshold.window"},
		{`threshold: {window: 5m}`, "threshold.count"},
		{`threshold: {window: 5m, count: 100000}`, "threshold.count"},
		{`threshold: {window: 5m, distinct: {field: colour, count: 2}}`, "threshold.distinct.field"},
		{`threshold: {window: 5m, distinct: {field: station_id}}`, "threshold.distinct.count"},
		{`threshold: {window: 5m, sum: {field: volume_l}}`, "threshold.sum.value"},
		{`threshold: {window: 5m, sum: {field: plate, value: 1}}`, "threshold.sum.field"},
		{`velocity: {within: 6h}`, "velocity.max_kmh"},
		{`velocity: {max_kmh: 200}`, "velocity.within"},
		{`velocity: {max_kmh: 200, within: 6h, min_distance_km: -1}`, "velocity.min_distance_km"},
		{`sequence: {within: 1h, steps: [{filter: "true"}]}`, "sequence.steps"},
		{`sequence: {steps: [{}, {}]}`, "sequence.within"},
		{`sequence: {within: 1h, steps: [{}, {types: [nope]}]}`, "sequence.steps[1].types"},
		{`absence: {}`, "absence.for"},
		{`absence: {for: 5m, forget: 1m}`, "absence.forget"},
		{`absence: {for: 5m, group: {fraction: 2}}`, "absence.group.fraction"},
		{`absence: {for: 5m, group: {min_devices: 1}}`, "absence.group.min_devices"},
		{`absence: {for: 5m, until: "nope =="}`, "absence.until"},
		{`geofence: {schedule: {from: "25:00", to: "06:00"}}`, "geofence.schedule.from"},
		{`geofence: {schedule: {from: "22:00", to: "6"}}`, "geofence.schedule.to"},
		{`geofence: {schedule: {from: "22:00", to: "06:00", days: [someday]}}`, "geofence.schedule.days"},
		{`geofence: {dwell: -1s}`, "geofence.dwell"},
		{`cooccurrence: {gap: 30s, within: 2h, places: 9}`, "cooccurrence.places"},
		{`cooccurrence: {within: 2h}`, "cooccurrence.gap"},
		{`cooccurrence: {gap: 30s}`, "cooccurrence.within"},
		{`cooccurrence: {gap: 30s, within: 2h, place: lane}`, "cooccurrence.place"},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			file := "rules:\n  - id: r1\n    severity: low\n    " + tt.kind + "\n"
			_, err := Load([]byte(file), Lists{})
			if err == nil {
				t.Fatalf("%s: no error", tt.kind)
			}
			if !strings.Contains(err.Error(), `rule "r1"`) || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("%s: error %q does not name the rule and %s", tt.kind, err, tt.field)
			}
		})
	}
}

func TestDisabledRule(t *testing.T) {
	rs, err := Load([]byte("rules:\n  - {id: a, severity: low, enabled: false, match: {}}\n  - {id: b, severity: low, match: {}}\n"), Lists{})
	if err != nil {
		t.Fatal(err)
	}
	if got := rs.Rules(); len(got) != 1 || got[0] != "b" {
		t.Errorf("rules = %v, want [b]", got)
	}
}
