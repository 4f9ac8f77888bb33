package rules

import (
	"strings"
	"testing"
	"time"

	"citywatch/event"
)

// TestUpdateIntervalSeverityRise: an update that raises the alert's
// severity (here a hotlist reloaded with a graver entry) goes out at once,
// within the rule's update interval; one that does not is held.
func TestUpdateIntervalSeverityRise(t *testing.T) {
	file := []byte(`rules:
  - {id: hot, severity: high, update_interval: 1m, types: [checkpoint.pass], match: {key: plate, list: vehicle_hotlist}}
`)
	ruleSet := func(severity string) *RuleSet {
		t.Helper()
		h, err := LoadHotlist(strings.NewReader("plate,severity,reason\n鄂F12345," + severity + ",stolen\n"))
		if err != nil {
			t.Fatal(err)
		}
		rs, err := Load(file, Lists{Hotlist: h})
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	eng, err := New(Config{}, ruleSet("medium"), nil)
	if err != nil {
		t.Fatal(err)
	}
	pass := func(id string, after time.Duration) *event.Event {
		return &event.Event{ID: id, Type: event.TypeCheckpointPass, DeviceID: "kk-1", Time: t0.Add(after),
			Plate: "鄂F12345", PlateValid: true, Confidence: 1, Lat: 32, Lon: 112}
	}
	var out []event.Alert
	out = eng.Process(t0, pass("a", 0), out)
	out = eng.Process(t0, pass("b", 10*time.Second), out)
	eng.Offer(ruleSet("critical"))
	out = eng.Process(t0, pass("c", 20*time.Second), out)
	got := make([]string, len(out))
	for i, a := range out {
		got[i] = string(a.Status) + " " + string(a.Severity) + " " + strings.Join(a.Evidence, ",")
	}
	want := []string{"firing medium a", "updated critical a,b,c"}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("messages %q, want %q", got, want)
	}
}

// TestUpdateIntervalValidation rejects a negative interval and one longer
// than the suppression window, naming the rule and the field; an absence
// rule, whose alerts end only when the key returns, may have any.
func TestUpdateIntervalValidation(t *testing.T) {
	for _, spec := range []string{
		"{id: x, severity: low, update_interval: -1s, match: {}}",
		"{id: x, severity: low, update_interval: 11m, suppress: 10m, match: {}}",
	} {
		_, err := Load([]byte("rules:\n  - "+spec+"\n"), Lists{})
		if err == nil || !strings.Contains(err.Error(), `rule "x"`) || !strings.Contains(err.Error(), "update_interval") {
			t.Errorf("%s: err = %v, want one naming rule x and update_interval", spec, err)
		}
	}
	if _, err := Load([]byte("rules:\n  - {id: x, severity: low, update_interval: 1m, absence: {key: device, for: 30s}}\n"), Lists{}); err != nil {
		t.Errorf("absence rule with an interval longer than its window: %v", err)
	}
}
