package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"citywatch/event"
)

// TestFile is a rule test file (rules/testdata/*.test.yaml, run by
// RunTestFiles and `citywatch rules test`): a rule set, the lists and city
// hooks it needs, and test cases of timed input events with the alerts
// they must raise, in the manner of `promtool test rules`.
//
//	rules: default                 # the default pack, or a rule file path relative to this file
//	only: [vehicle.cloned_plate]   # compare only these rules' alerts (default: all)
//	defaults:                      # fields added to every input event of a type
//	  checkpoint.pass: {lane: 1, plate_color: blue, vehicle_type: car, speed_kmh: 60}
//	tests:
//	  - name: two reads 120 km apart in 20 minutes
//	    input:
//	      - {id: e1, type: checkpoint.pass, device_id: kk-001, time: "2026-11-26T08:00:00+08:00", lat: 32.0, lon: 112.1, plate: 鄂F12345}
//	      - advance: "2026-11-26T08:30:00+08:00"   # wall clock moves on with no input
//	    alerts:
//	      - {rule: vehicle.cloned_plate, status: firing, subject: {kind: plate, id: 鄂F12345}, evidence: [e1, e2]}
//
// Input events are raw device messages (CONTRACT.md section 2, as YAML or as
// a json string); they are decoded and validated as ingest does, and fuel
// buyers are pseudonymised with pseudonym_key. Each event arrives when the
// wall clock reads its time (or its at), never earlier than the one before;
// advance moves the wall clock with no input. Expected alerts are compared
// in order, on the fields they give (details: only the names given); a
// subject id "pseudonym:NUMBER" stands for the pseudonym of that ID number.
type TestFile struct {
	// Rules is "default" (the default pack) or the path of a rule file,
	// relative to the test file; RuleFile holds a rule file inline instead.
	Rules    string `yaml:"rules"`
	RuleFile string `yaml:"rule_file"`
	// Hotlist and Watchlist are "default", a CSV path, or empty for none
	// unless Rules is default; HotlistCSV and WatchlistCSV hold them inline.
	Hotlist      string `yaml:"hotlist"`
	Watchlist    string `yaml:"watchlist"`
	HotlistCSV   string `yaml:"hotlist_csv"`
	WatchlistCSV string `yaml:"watchlist_csv"`
	// PseudonymKey keys buyer pseudonyms; default a fixed test key.
	PseudonymKey string        `yaml:"pseudonym_key"`
	TimeZone     string        `yaml:"time_zone"`
	Lateness     time.Duration `yaml:"lateness"`
	// Zones are the protected zones geofence rules see.
	Zones []TestZone `yaml:"zones"`
	// Sites maps devices to sites for grouped absence alerts; devices not
	// listed are grouped by grid cell.
	Sites map[string]string `yaml:"sites"`
	// Only limits the comparison to these rules' alerts.
	Only     []string                  `yaml:"only"`
	Defaults map[string]map[string]any `yaml:"defaults"`
	Tests    []TestCase                `yaml:"tests"`
}

// TestZone is a protected zone of a test file.
type TestZone struct {
	ID      string       `yaml:"id"`
	Name    string       `yaml:"name"`
	Kind    string       `yaml:"kind"`
	Polygon [][2]float64 `yaml:"polygon"` // [lat, lon] vertices
}

// TestCase is one case: input on a fresh engine, and the alerts expected.
type TestCase struct {
	Name   string          `yaml:"name"`
	Input  []TestInput     `yaml:"input"`
	Alerts []ExpectedAlert `yaml:"alerts"`
}

// TestInput is one input step: an event (its fields inline, or JSON), or
// an advance of the wall clock.
type TestInput struct {
	Advance string         `yaml:"advance"`
	At      string         `yaml:"at"`
	JSON    string         `yaml:"json"`
	Fields  map[string]any `yaml:",inline"`
}

// ExpectedAlert is an alert message a case must produce; empty fields are
// not compared.
type ExpectedAlert struct {
	Rule      string            `yaml:"rule"`
	Status    event.AlertStatus `yaml:"status"`
	Severity  event.Severity    `yaml:"severity"`
	Subject   *event.Subject    `yaml:"subject"`
	EventTime string            `yaml:"event_time"`
	Evidence  []string          `yaml:"evidence"`
	Summary   string            `yaml:"summary"`
	Details   map[string]any    `yaml:"details"`
}

// TestPseudonymKey is the pseudonym key of test files that name none.
const TestPseudonymKey = "citywatch-rule-tests-key"

// ErrTestsFailed is returned by RunTestFiles when a case failed.
var ErrTestsFailed = errors.New("rule tests failed")

// RunTestFiles runs rule test files and writes a line per file, and the
// differences of every failing case, to w. It returns ErrTestsFailed when
// a case failed, or the error of a file that cannot be read.
func RunTestFiles(paths []string, w io.Writer) error {
	failed := false
	for _, path := range paths {
		n, fails, err := runTestFile(path)
		if err != nil {
			fmt.Fprintf(w, "FAIL %s: %v\n", path, err)
			failed = true
			continue
		}
		if len(fails) == 0 {
			fmt.Fprintf(w, "ok   %s (%d cases)\n", path, n)
			continue
		}
		failed = true
		fmt.Fprintf(w, "FAIL %s (%d of %d cases)\n", path, len(fails), n)
		for _, f := range fails {
			fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(f, "\n", "\n  "))
		}
	}
	if failed {
		return ErrTestsFailed
	}
	return nil
}

// runTestFile runs one file and returns its number of cases and the
// report of each failed one.
func runTestFile(path string) (int, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, nil, fmt.Errorf("cannot read test file: %w", err)
	}
	var tf TestFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&tf); err != nil {
		return 0, nil, fmt.Errorf("cannot parse test file: %w", err)
	}
	env, err := tf.setup(filepath.Dir(path))
	if err != nil {
		return 0, nil, err
	}
	var fails []string
	for i := range tf.Tests {
		tc := &tf.Tests[i]
		name := tc.Name
		if name == "" {
			name = fmt.Sprintf("case %d", i+1)
		}
		for j := range tc.Alerts {
			if sub := tc.Alerts[j].Subject; sub != nil {
				if id, ok := strings.CutPrefix(sub.ID, "pseudonym:"); ok {
					sub.ID = env.pseud.Pseudonym(id)
				}
			}
		}
		got, err := env.run(&tf, tc)
		if err != nil {
			fails = append(fails, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		if diff := compareAlerts(tc.Alerts, got); diff != "" {
			fails = append(fails, fmt.Sprintf("%s: alerts differ (- expected, + got):\n%s", name, diff))
		}
	}
	return len(tf.Tests), fails, nil
}

// testEnv is what a file's cases share.
type testEnv struct {
	rs    *RuleSet
	cfg   Config
	pseud *event.Pseudonymizer
}

func (tf *TestFile) setup(dir string) (*testEnv, error) {
	key := tf.PseudonymKey
	if key == "" {
		key = TestPseudonymKey
	}
	p, err := event.NewPseudonymizer([]byte(key))
	if err != nil {
		return nil, fmt.Errorf("pseudonym_key: %w", err)
	}
	readPath := func(name string) ([]byte, error) {
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		return os.ReadFile(name)
	}
	var ruleData []byte
	isDefault := false
	switch {
	case tf.RuleFile != "":
		ruleData = []byte(tf.RuleFile)
	case tf.Rules == "default":
		ruleData, isDefault = defaultRules, true
	case tf.Rules != "":
		if ruleData, err = readPath(tf.Rules); err != nil {
			return nil, fmt.Errorf("cannot read rules: %w", err)
		}
	default:
		return nil, errors.New("rules or rule_file is required")
	}
	var lists Lists
	hot, watch := tf.Hotlist, tf.Watchlist
	if isDefault {
		hot, watch = cmpOr(hot, "default"), cmpOr(watch, "default")
	}
	csvOf := func(name, inline string, def []byte) ([]byte, error) {
		switch {
		case inline != "":
			return []byte(inline), nil
		case name == "default":
			return def, nil
		case name == "":
			return nil, nil
		}
		return readPath(name)
	}
	if b, err := csvOf(hot, tf.HotlistCSV, defaultHotlist); err != nil {
		return nil, fmt.Errorf("cannot read hotlist: %w", err)
	} else if b != nil {
		if lists.Hotlist, err = LoadHotlist(bytes.NewReader(b)); err != nil {
			return nil, err
		}
	}
	if b, err := csvOf(watch, tf.WatchlistCSV, defaultWatchlist); err != nil {
		return nil, fmt.Errorf("cannot read watchlist: %w", err)
	} else if b != nil {
		if lists.Watchlist, err = LoadWatchlist(bytes.NewReader(b), p); err != nil {
			return nil, err
		}
	}
	rs, err := Load(ruleData, lists)
	if err != nil {
		return nil, err
	}
	cfg := Config{TimeZone: tf.TimeZone, Limits: Limits{Lateness: tf.Lateness}}
	if len(tf.Zones) > 0 {
		zs := make([]PolygonZone, len(tf.Zones))
		for i, z := range tf.Zones {
			zs[i] = PolygonZone{Zone: Zone{ID: z.ID, Name: z.Name, Kind: z.Kind}, Polygon: z.Polygon}
		}
		cfg.Zones = PolygonZones(zs)
	}
	if len(tf.Sites) > 0 {
		sites := tf.Sites
		cfg.Site = func(dev string, lat, lon float64) string {
			if s, ok := sites[dev]; ok {
				return s
			}
			return GridSite(dev, lat, lon)
		}
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &testEnv{rs: rs, cfg: cfg, pseud: p}, nil
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// run feeds one case to a fresh engine and returns the alerts of the rules
// compared.
func (env *testEnv) run(tf *TestFile, tc *TestCase) ([]event.Alert, error) {
	eng, err := New(env.cfg, env.rs, nil)
	if err != nil {
		return nil, err
	}
	far := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	dec := event.Decoder{Now: func() time.Time { return far }}
	var (
		out  []event.Alert
		wall time.Time
		ev   event.Event
	)
	for i, in := range tc.Input {
		step := fmt.Sprintf("input %d", i+1)
		if in.Advance != "" {
			t, err := time.Parse(time.RFC3339Nano, in.Advance)
			if err != nil {
				return nil, fmt.Errorf("%s: advance: %w", step, err)
			}
			if t.After(wall) {
				wall = t
			}
			out = eng.Advance(wall, out)
			continue
		}
		msg, err := in.message(tf.Defaults)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", step, err)
		}
		if err := dec.Decode(msg, &ev); err != nil {
			return nil, fmt.Errorf("%s: invalid event: %w", step, err)
		}
		env.pseud.Apply(&ev)
		at := ev.Time
		if in.At != "" {
			if at, err = time.Parse(time.RFC3339Nano, in.At); err != nil {
				return nil, fmt.Errorf("%s: at: %w", step, err)
			}
		}
		if at.After(wall) {
			wall = at
		}
		out = eng.Process(wall, &ev, out)
	}
	if len(tf.Only) == 0 {
		return out, nil
	}
	kept := out[:0]
	for _, a := range out {
		if slices.Contains(tf.Only, a.Rule) {
			kept = append(kept, a)
		}
	}
	return kept, nil
}

// message returns the JSON message of an input event, with the file's
// defaults for its type filled in.
func (in *TestInput) message(defaults map[string]map[string]any) ([]byte, error) {
	if in.JSON != "" {
		if len(in.Fields) > 0 {
			return nil, errors.New("json and inline fields together")
		}
		return []byte(in.JSON), nil
	}
	if len(in.Fields) == 0 {
		return nil, errors.New("an input needs an event or advance")
	}
	m := make(map[string]any, len(in.Fields)+8)
	typ, _ := in.Fields["type"].(string)
	for k, v := range defaults[typ] {
		m[k] = v
	}
	for k, v := range in.Fields {
		if t, ok := v.(time.Time); ok {
			v = t.Format(time.RFC3339Nano)
		}
		m[k] = v
	}
	return json.Marshal(m)
}

// compareAlerts returns the differences between the expected alerts and
// those raised, one line per alert, or "".
func compareAlerts(want []ExpectedAlert, got []event.Alert) string {
	var b strings.Builder
	n := max(len(want), len(got))
	for i := range n {
		switch {
		case i >= len(got):
			fmt.Fprintf(&b, "- %s\n", want[i].String())
		case i >= len(want):
			fmt.Fprintf(&b, "+ %s\n", describeAlert(&got[i]))
		default:
			if why := want[i].mismatch(&got[i]); why != "" {
				fmt.Fprintf(&b, "- %s\n+ %s\n  (%s)\n", want[i].String(), describeAlert(&got[i]), why)
			}
		}
	}
	return b.String()
}

func (x *ExpectedAlert) String() string {
	s := x.Rule + " " + string(x.Status)
	if x.Subject != nil {
		s += " " + x.Subject.Kind + ":" + x.Subject.ID
	}
	if x.Severity != "" {
		s += " " + string(x.Severity)
	}
	if x.Evidence != nil {
		s += " evidence=" + strings.Join(x.Evidence, ",")
	}
	if len(x.Details) > 0 {
		b, _ := json.Marshal(x.Details)
		s += " details⊇" + string(b)
	}
	return s
}

func describeAlert(a *event.Alert) string {
	d := a.AppendDetailsJSON(nil)
	return fmt.Sprintf("%s %s %s:%s %s evidence=%s details=%s summary=%q",
		a.Rule, a.Status, a.Subject.Kind, a.Subject.ID, a.Severity,
		strings.Join(a.Evidence, ","), d, a.Summary)
}

// mismatch names the first field of a that differs from x, or "".
func (x *ExpectedAlert) mismatch(a *event.Alert) string {
	switch {
	case x.Rule != "" && x.Rule != a.Rule:
		return "rule"
	case x.Status != "" && x.Status != a.Status:
		return "status"
	case x.Severity != "" && x.Severity != a.Severity:
		return "severity"
	case x.Subject != nil && *x.Subject != a.Subject:
		return "subject"
	case x.Evidence != nil && !slices.Equal(x.Evidence, a.Evidence):
		return "evidence"
	case x.Summary != "" && x.Summary != a.Summary:
		return "summary"
	}
	if x.EventTime != "" {
		t, err := time.Parse(time.RFC3339Nano, x.EventTime)
		if err != nil || !t.Equal(a.EventTime) {
			return "event_time"
		}
	}
	for name, want := range x.Details {
		if !sameValue(want, a.Detail(name)) {
			return "details." + name
		}
	}
	return ""
}

// sameValue compares a value written in YAML with a detail.
func sameValue(want, got any) bool {
	num := func(v any) (float64, bool) {
		switch v := v.(type) {
		case int:
			return float64(v), true
		case int64:
			return float64(v), true
		case float64:
			return v, true
		}
		return 0, false
	}
	if w, ok := num(want); ok {
		g, ok := num(got)
		return ok && w == g
	}
	if list, ok := want.([]any); ok {
		gs, ok := got.([]string)
		if !ok || len(gs) != len(list) {
			return false
		}
		for i := range list {
			if fmt.Sprint(list[i]) != gs[i] {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(want, got)
}
