package simulators

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestVerify(t *testing.T) {
	t0 := DefaultStart
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	raise := func(rule, kind, id string, from, to time.Duration) Expectation {
		return Expectation{Rule: rule, Raise: true, Subject: Subject{Kind: kind, ID: id}, From: at(from), To: at(to), Note: rule + " " + id}
	}
	near := func(rule, kind, id string, from, to time.Duration) Expectation {
		x := raise(rule, kind, id, from, to)
		x.Raise = false
		return x
	}
	alert := func(id, rule, status, kind, subject string, eventAt, raisedAt time.Duration) Alert {
		return Alert{ID: id, Rule: rule, Status: status, Subject: Subject{Kind: kind, ID: subject}, EventTime: at(eventAt), RaisedAt: at(raisedAt)}
	}
	violence := raise(RuleViolence, "device", "cam-1", time.Minute, time.Minute)
	offline := raise(RuleOffline, "device", "cam-2", 4*time.Minute, 7*time.Minute)
	calm := near(RuleViolence, "device", "cam-3", 2*time.Minute, 2*time.Minute)

	type figures struct {
		Rule                                                              string
		Expected, Detected, NearMisses, MustNotRaised, Duplicates, Falses int
	}
	for _, tc := range []struct {
		name    string
		expect  []Expectation
		alerts  []Alert
		opt     VerifyOptions
		want    []figures
		ok      bool
		outside int
	}{
		{
			name:   "detected once, updates and resolution do not count again",
			expect: []Expectation{violence, calm},
			alerts: []Alert{
				alert("a", RuleViolence, StatusFiring, "device", "cam-1", time.Minute, time.Minute+time.Second),
				alert("a", RuleViolence, StatusUpdated, "device", "cam-1", 2*time.Minute, 2*time.Minute),
				alert("a", RuleViolence, StatusResolved, "device", "cam-1", 2*time.Minute, 12*time.Minute),
			},
			want: []figures{{Rule: RuleViolence, Expected: 1, Detected: 1, NearMisses: 1}},
			ok:   true,
		},
		{
			name:   "missed",
			expect: []Expectation{violence, offline},
			alerts: []Alert{alert("a", RuleViolence, StatusFiring, "device", "cam-1", time.Minute, time.Minute)},
			want: []figures{
				{Rule: RuleViolence, Expected: 1, Detected: 1},
				{Rule: RuleOffline, Expected: 1},
			},
		},
		{
			name:   "an alert outside the window is no detection",
			expect: []Expectation{offline},
			alerts: []Alert{alert("a", RuleOffline, StatusFiring, "device", "cam-2", 8*time.Minute, 8*time.Minute)},
			want:   []figures{{Rule: RuleOffline, Expected: 1, Falses: 1}},
		},
		{
			name:   "slack widens the window",
			expect: []Expectation{offline},
			alerts: []Alert{alert("a", RuleOffline, StatusFiring, "device", "cam-2", 8*time.Minute, 8*time.Minute)},
			opt:    VerifyOptions{Slack: 90 * time.Second},
			want:   []figures{{Rule: RuleOffline, Expected: 1, Detected: 1}},
			ok:     true,
		},
		{
			name:   "another subject or rule does not match",
			expect: []Expectation{violence},
			alerts: []Alert{
				alert("a", RuleViolence, StatusFiring, "device", "cam-9", time.Minute, time.Minute),
				alert("b", RuleDroneDetect, StatusFiring, "device", "cam-1", time.Minute, time.Minute),
			},
			want: []figures{
				{Rule: RuleViolence, Expected: 1, Falses: 1},
				{Rule: RuleDroneDetect, Falses: 1},
			},
		},
		{
			name:   "a near miss that fires",
			expect: []Expectation{calm},
			alerts: []Alert{alert("a", RuleViolence, StatusFiring, "device", "cam-3", 2*time.Minute, 2*time.Minute)},
			want:   []figures{{Rule: RuleViolence, NearMisses: 1, MustNotRaised: 1}},
		},
		{
			name:   "a second alert for one incident is a duplicate",
			expect: []Expectation{offline},
			alerts: []Alert{
				alert("a", RuleOffline, StatusFiring, "device", "cam-2", 5*time.Minute, 5*time.Minute),
				alert("b", RuleOffline, StatusFiring, "device", "cam-2", 6*time.Minute, 6*time.Minute),
			},
			want: []figures{{Rule: RuleOffline, Expected: 1, Detected: 1, Duplicates: 1}},
			ok:   true,
		},
		{
			name: "the same subject planted twice: one alert each, in order",
			expect: []Expectation{
				raise(RuleHotlist, "plate", "鄂F12345", 3*time.Hour, 3*time.Hour+5*time.Minute),
				raise(RuleHotlist, "plate", "鄂F12345", time.Minute, 5*time.Minute),
			},
			alerts: []Alert{
				alert("b", RuleHotlist, StatusFiring, "plate", "鄂F12345", 3*time.Hour+time.Minute, 3*time.Hour+time.Minute),
				alert("a", RuleHotlist, StatusFiring, "plate", "鄂F12345", 2*time.Minute, 2*time.Minute),
			},
			want: []figures{{Rule: RuleHotlist, Expected: 2, Detected: 2}},
			ok:   true,
		},
		{
			name:   "a raise missing from the input: the first message stands for it",
			expect: []Expectation{violence},
			alerts: []Alert{alert("a", RuleViolence, StatusResolved, "device", "cam-1", time.Minute, 11*time.Minute)},
			want:   []figures{{Rule: RuleViolence, Expected: 1, Detected: 1}},
			ok:     true,
		},
		{
			name:   "rules outside the check are neither expected nor false alarms",
			expect: []Expectation{violence, raise(RuleCoverageGap, "circle", "c-1", time.Minute, 2*time.Minute)},
			alerts: []Alert{
				alert("a", RuleViolence, StatusFiring, "device", "cam-1", time.Minute, time.Minute),
				alert("b", "dispatch.sla_breach", StatusFiring, "alert", "a", 5*time.Minute, 5*time.Minute),
			},
			opt:  VerifyOptions{Rules: []string{RuleViolence}},
			want: []figures{{Rule: RuleViolence, Expected: 1, Detected: 1}},
			ok:   true,
		},
		{
			name:   "alerts before the start or after the end are outside the run",
			expect: []Expectation{violence},
			alerts: []Alert{
				alert("a", RuleViolence, StatusFiring, "device", "cam-1", time.Minute, time.Minute),
				alert("b", RuleOffline, StatusFiring, "device", "cam-7", -time.Hour, -time.Hour),
				alert("c", RuleOffline, StatusFiring, "device", "cam-7", 5*time.Hour, 5*time.Hour),
			},
			want:    []figures{{Rule: RuleViolence, Expected: 1, Detected: 1}, {Rule: RuleOffline}},
			ok:      true,
			outside: 2,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			truth := &Truth{Scenario: "test", Start: t0, End: at(4 * time.Hour), Expect: tc.expect}
			rep := Verify(truth, tc.alerts, tc.opt)
			var got []figures
			for _, r := range rep.Rules {
				got = append(got, figures{r.Rule, r.Expected, r.Detected, r.NearMisses, r.MustNotRaised, r.Duplicates, r.FalseAlarms})
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("figures (- want, + got):\n%s", d)
			}
			if rep.OK() != tc.ok {
				t.Errorf("OK() = %v, want %v", rep.OK(), tc.ok)
			}
			if rep.Outside != tc.outside {
				t.Errorf("outside = %d, want %d", rep.Outside, tc.outside)
			}
			if n := rep.Total.Expected - rep.Total.Detected; n != len(rep.Missed) {
				t.Errorf("total missed %d, %d listed", n, len(rep.Missed))
			}
		})
	}
}

func TestVerifyLatency(t *testing.T) {
	t0 := DefaultStart
	truth := &Truth{Start: t0, End: t0.Add(time.Hour)}
	var alerts []Alert
	for i := range 10 {
		id := string(rune('a' + i))
		truth.Expect = append(truth.Expect, Expectation{Rule: RuleCrowd, Raise: true, Subject: Subject{Kind: "device", ID: id}, From: t0, To: t0.Add(time.Minute)})
		alerts = append(alerts, Alert{ID: id, Rule: RuleCrowd, Status: StatusFiring, Subject: Subject{Kind: "device", ID: id},
			EventTime: t0, RaisedAt: t0.Add(time.Duration(i+1) * time.Second)})
	}
	rep := Verify(truth, alerts, VerifyOptions{})
	want := Latency{N: 10, P50: 5 * time.Second, P90: 9 * time.Second, Max: 10 * time.Second}
	if got := rep.Rules[0].Latency; got != want {
		t.Errorf("latency %+v, want %+v", got, want)
	}
	if got := rep.Total.Latency; got != want {
		t.Errorf("total latency %+v, want %+v", got, want)
	}
}

func TestReadAlerts(t *testing.T) {
	in := `{"id":"a","rule":"camera.violence","severity":"critical","status":"firing","subject":{"kind":"device","id":"cam-1"},` +
		`"event_time":"2026-11-26T08:00:00.000+08:00","raised_at":"2026-11-26T00:00:01.250Z","lat":32,"lon":112,"district":"","evidence":["e1"],"summary":"打架斗殴","details":{}}

{"id":"a","rule":"camera.violence","status":"resolved","subject":{"kind":"device","id":"cam-1"},"event_time":"2026-11-26T08:00:00+08:00","raised_at":"2026-11-26T00:10:01Z"}
`
	got, err := ReadAlerts(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Status != StatusFiring || got[0].Subject.ID != "cam-1" || got[0].RaisedAt.Sub(got[0].EventTime) != 1250*time.Millisecond {
		t.Errorf("got %+v", got)
	}
	for _, bad := range []string{`{"rule":"x"}`, `not json`, `{"id":"a","rule":"x","event_time":"yesterday"}`} {
		if _, err := ReadAlerts(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func TestReportWrite(t *testing.T) {
	t0 := DefaultStart
	truth := &Truth{Start: t0, End: t0.Add(time.Hour), Expect: []Expectation{
		{Rule: RuleViolence, Raise: true, Subject: Subject{Kind: "device", ID: "cam-1"}, From: t0, To: t0, Note: "fight 0.92"},
	}}
	var b strings.Builder
	if err := Verify(truth, nil, VerifyOptions{}).Write(&b, 0); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"camera.violence", "0.00", "missed (1):", "fight 0.92", "total"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
