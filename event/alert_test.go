package event

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestAlertJSON(t *testing.T) {
	loc := time.FixedZone("CST", 8*3600)
	a := Alert{
		ID: "3f1c", Rule: "vehicle.hotlist", Severity: SeverityHigh, Status: AlertFiring,
		Subject:   Subject{Kind: SubjectPlate, ID: "鄂F12345"},
		EventTime: time.Date(2026, 11, 26, 8, 15, 30, 125e6, loc),
		RaisedAt:  time.Date(2026, 11, 26, 0, 15, 30, 130e6, time.UTC),
		Lat:       32.0421, Lon: 112.1442, District: "襄城区", CircleID: "c-07", TierMinutes: 3,
		Evidence: []string{"e1", "e\"2"},
		Summary:  "布控车辆鄂F12345在kk-001被识别",
		Details: []Detail{
			{"covert", false}, {"lookalike_diffs", 1}, {"speed_kmh", 272.8},
			{"device_ids", []string{"a", "b"}}, {"reason", "被盗\n抢"},
		},
	}
	got := string(a.AppendJSON(nil))
	want := `{"id":"3f1c","rule":"vehicle.hotlist","severity":"high","status":"firing",` +
		`"subject":{"kind":"plate","id":"鄂F12345"},"event_time":"2026-11-26T08:15:30.125+08:00",` +
		`"raised_at":"2026-11-26T00:15:30.130Z","lat":32.0421,"lon":112.1442,"district":"襄城区",` +
		`"circle_id":"c-07","tier_minutes":3,"evidence":["e1","e\"2"],"summary":"布控车辆鄂F12345在kk-001被识别",` +
		`"details":{"covert":false,"lookalike_diffs":1,"speed_kmh":272.8,"device_ids":["a","b"],"reason":"被盗\n抢"}}`
	if got != want {
		t.Errorf("AppendJSON:\n got %s\nwant %s", got, want)
	}
	if !json.Valid([]byte(got)) {
		t.Fatal("not valid JSON")
	}
	back, err := DecodeAlert([]byte(got))
	if err != nil {
		t.Fatal(err)
	}
	a.Details[1].Value = 1.0 // numbers come back as float64
	if diff := cmp.Diff(a, back, cmp.Comparer(func(x, y time.Time) bool { return x.Equal(y) })); diff != "" {
		t.Errorf("DecodeAlert round trip (-want +got):\n%s", diff)
	}
}

func TestAlertJSONWithoutCircle(t *testing.T) {
	a := Alert{ID: "x", Rule: "r", Severity: SeverityLow, Status: AlertResolved, Subject: Subject{"device", "d"}}
	var m map[string]any
	if err := json.Unmarshal(a.AppendJSON(nil), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"circle_id", "tier_minutes"} {
		if _, ok := m[k]; ok {
			t.Errorf("%s written without a circle", k)
		}
	}
	for _, k := range []string{"id", "rule", "severity", "status", "subject", "event_time", "raised_at", "lat", "lon", "district", "evidence", "summary", "details"} {
		if _, ok := m[k]; !ok {
			t.Errorf("%s missing", k)
		}
	}
	if ev, ok := m["evidence"].([]any); !ok || len(ev) != 0 {
		t.Errorf("evidence = %v, want []", m["evidence"])
	}
}

func TestAlertIDDeterministic(t *testing.T) {
	start := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	a := AlertID("vehicle.hotlist", Subject{"plate", "鄂F12345"}, start)
	if b := AlertID("vehicle.hotlist", Subject{"plate", "鄂F12345"}, start.In(time.FixedZone("", 8*3600))); a != b {
		t.Errorf("same instant, other zone: %s != %s", a, b)
	}
	for _, other := range []string{
		AlertID("vehicle.hotlist", Subject{"plate", "鄂F12346"}, start),
		AlertID("vehicle.cloned_plate", Subject{"plate", "鄂F12345"}, start),
		AlertID("vehicle.hotlist", Subject{"plate", "鄂F12345"}, start.Add(time.Millisecond)),
	} {
		if other == a {
			t.Errorf("different situation, same id %s", a)
		}
	}
	if len(a) != 32 {
		t.Errorf("id %q is not 32 hex digits", a)
	}
}

func TestAlertAppendJSONAllocs(t *testing.T) {
	a := Alert{ID: "x", Rule: "r", Severity: SeverityLow, Status: AlertFiring, Subject: Subject{"device", "d"},
		Evidence: []string{"a", "b"}, Details: []Detail{{"n", 1}, {"s", "x"}}}
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf = a.AppendJSON(buf[:0]) }); n != 0 {
		t.Errorf("AppendJSON allocates %v times", n)
	}
}

func TestDispatchJSONRoundTrip(t *testing.T) {
	d := Dispatch{
		ID: "d1", AlertID: "a1", UnitID: "unit-007", Status: DispatchAssigned,
		Time:       time.Date(2026, 11, 26, 0, 15, 30, 125e6, time.UTC),
		ETASeconds: 92.5, DistanceM: 1530, CircleID: "c-07", TierMinutes: 3,
	}
	b := d.AppendJSON(nil)
	want := `{"id":"d1","alert_id":"a1","unit_id":"unit-007","status":"assigned","time":"2026-11-26T00:15:30.125Z","eta_s":92.5,"distance_m":1530,"circle_id":"c-07","tier_minutes":3}`
	if string(b) != want {
		t.Fatalf("AppendJSON:\n got %s\nwant %s", b, want)
	}
	got, err := DecodeDispatch(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(d, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	for _, bad := range []string{`{`, `{"id":"d1","alert_id":"a1","status":"lost","time":"2026-11-26T00:15:30Z"}`, `{"id":"d1","status":"assigned","time":"2026-11-26T00:15:30Z"}`, `{"id":"d1","alert_id":"a1","status":"assigned"}`} {
		if _, err := DecodeDispatch([]byte(bad)); err == nil {
			t.Errorf("DecodeDispatch(%s): no error", bad)
		}
	}
}
