package rules

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"citywatch/event"
)

// RuleFile is a rule file: a list of rule instances.
//
//	rules:
//	  - id: vehicle.cloned_plate
//	    severity: high
//	    types: [checkpoint.pass, camera.detection]
//	    filter: plate_valid && confidence >= 0.5
//	    suppress: 6h
//	    update_interval: 1m
//	    summary: "疑似套牌车辆{plate}：…"
//	    velocity: {max_kmh: 200, min_distance_km: 2, within: 6h}
//
// Each rule has exactly one kind section (match, threshold, velocity,
// sequence, absence, geofence or cooccurrence) holding its parameters.
type RuleFile struct {
	Rules []RuleSpec `yaml:"rules"`
}

// RuleSpec is one rule as written in a rule file.
type RuleSpec struct {
	// ID names the rule in alerts; ids of CONTRACT.md section 6 are part
	// of the contract. Letters, digits, '.', '_' and '-'.
	ID          string `yaml:"id"`
	Description string `yaml:"description"`
	// Enabled switches the rule off when false; default true.
	Enabled *bool `yaml:"enabled"`
	// Severity of its alerts: critical, high, medium or low (a hotlist
	// entry may override it).
	Severity event.Severity `yaml:"severity"`
	// Types are the event types the rule reads; default every type.
	Types []string `yaml:"types"`
	// Filter is an expr-lang expression over the event's fields that an
	// event must satisfy to reach the rule (see exprEnv for the names).
	Filter string `yaml:"filter"`
	// Suppress is how long after its last evidence an alert stays open:
	// repeats within it update the alert instead of raising a new one,
	// and the alert is resolved when it passes quietly (absence and
	// resolvable match rules resolve on their own terms instead). Default
	// the rule's window, or 10m for kinds without one.
	Suppress time.Duration `yaml:"suppress"`
	// UpdateInterval is the least event time between two messages of one
	// open alert, as Alertmanager's group_interval is for a group: an
	// update that comes sooner is held, and the evidence gathered
	// meanwhile goes out once the interval has passed on the watermark, or
	// with the next message that goes at once. An update goes at once when
	// it raises the severity or moves the alert's place by 100 m or more
	// (a moving subject: the units need the new place), and the resolved
	// message carries all evidence. It spares the operators a detector
	// that repeats itself every second. At most Suppress (absence rules,
	// whose alerts end only when the key returns, excepted). Default 0:
	// every update at once.
	UpdateInterval time.Duration `yaml:"update_interval"`
	// Summary is the operator's line, in Simplified Chinese, with
	// {placeholders} for the subject ({subject}), the event's fields
	// ({device}, {plate}, {station}, {behavior}, …) and the alert's
	// details; {name|zh} renders a known value in Chinese.
	Summary string `yaml:"summary"`

	Match        *MatchSpec        `yaml:"match"`
	Threshold    *ThresholdSpec    `yaml:"threshold"`
	Velocity     *VelocitySpec     `yaml:"velocity"`
	Sequence     *SequenceSpec     `yaml:"sequence"`
	Absence      *AbsenceSpec      `yaml:"absence"`
	Geofence     *GeofenceSpec     `yaml:"geofence"`
	CoOccurrence *CoOccurrenceSpec `yaml:"cooccurrence"`
}

// sectionOf names the kind section of a spec type in error messages.
var sectionOf = map[string]string{
	"RuleSpec":         "",
	"RuleFile":         "",
	"MatchSpec":        "match.",
	"ThresholdSpec":    "threshold.",
	"DistinctSpec":     "threshold.distinct.",
	"SumSpec":          "threshold.sum.",
	"VelocitySpec":     "velocity.",
	"SequenceSpec":     "sequence.",
	"StepSpec":         "sequence.steps.",
	"AbsenceSpec":      "absence.",
	"GroupSpec":        "absence.group.",
	"GeofenceSpec":     "geofence.",
	"ScheduleSpec":     "geofence.schedule.",
	"CoOccurrenceSpec": "cooccurrence.",
}

// fieldError is an invalid field of a rule.
type fieldError struct {
	rule  string
	line  int
	field string
	msg   string
}

func (e *fieldError) Error() string {
	var b strings.Builder
	if e.rule != "" {
		fmt.Fprintf(&b, "rule %q", e.rule)
	} else {
		b.WriteString("rule file")
	}
	if e.line > 0 {
		fmt.Fprintf(&b, " (line %d)", e.line)
	}
	if e.field != "" {
		b.WriteString(": " + e.field)
	}
	b.WriteString(": " + e.msg)
	return b.String()
}

var yamlUnknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type rules\.(\w+)$`)
var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// Parse reads a rule file. Unknown fields are rejected with an error that
// names the rule and the field; the rules are not checked beyond their
// syntax (Compile does that).
func Parse(data []byte) (*RuleFile, error) {
	var f RuleFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(&f)
	if err == nil || errors.Is(err, io.EOF) {
		return &f, nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return nil, fmt.Errorf("cannot parse rule file: %w", err)
	}
	// Name the rule of every error by the line it is on.
	var nodes struct {
		Rules []yaml.Node `yaml:"rules"`
	}
	_ = yaml.Unmarshal(data, &nodes)
	ruleAt := func(line int) string {
		id := ""
		for _, n := range nodes.Rules {
			if n.Line > line {
				break
			}
			id = "#" + strconv.Itoa(indexOf(nodes.Rules, n)+1)
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == "id" {
					id = n.Content[i+1].Value
				}
			}
		}
		return id
	}
	var errs []error
	for _, msg := range te.Errors {
		if m := yamlUnknownField.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			errs = append(errs, &fieldError{rule: ruleAt(line), line: line, field: sectionOf[m[3]] + m[2], msg: "unknown field"})
			continue
		}
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			errs = append(errs, &fieldError{rule: ruleAt(line), line: line, msg: m[2]})
			continue
		}
		errs = append(errs, errors.New(msg))
	}
	return nil, fmt.Errorf("cannot parse rule file: %w", errors.Join(errs...))
}

func indexOf(ns []yaml.Node, n yaml.Node) int {
	for i := range ns {
		if ns[i].Line == n.Line && ns[i].Column == n.Column {
			return i
		}
	}
	return 0
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// RuleSet is a compiled rule file with the lists its match rules read. It
// is immutable and may be shared; an Engine runs one at a time.
type RuleSet struct {
	rules []*rule
	lists Lists
}

// Rules returns the ids of the enabled rules, in file order.
func (rs *RuleSet) Rules() []string {
	ids := make([]string, len(rs.rules))
	for i, r := range rs.rules {
		ids[i] = r.id
	}
	return ids
}

// Lists returns the lists the rule set was compiled with.
func (rs *RuleSet) Lists() Lists { return rs.lists }

// rule is one compiled rule: its parameters, never its state.
type rule struct {
	id          string
	severity    event.Severity
	types       uint32 // bit per event.Type
	filter      *filter
	suppress    int64 // ms
	updateEvery int64 // ms; 0: every update at once
	summary     template
	kind        kindSpec
	fingerprint [32]byte
}

func (r *rule) reads(t event.Type) bool { return r.types&(1<<t) != 0 }

// kindSpec is the compiled parameters of one rule kind.
type kindSpec interface {
	// newState returns the rule's empty state.
	newState(cfg *Config) kindState
	// window is the kind's natural suppression window, or 0.
	window() time.Duration
}

// kindState is the mutable state of one rule; only the engine's goroutine
// uses it.
type kindState interface {
	// process evaluates one event that passed the rule's types and filter
	// and is not late.
	process(x *evalCtx, e *event.Event)
	// tick runs when the watermark has moved: expiry and timeouts.
	tick(x *evalCtx)
	// size returns the number of keys held, an estimate of their bytes and
	// the number of keys evicted for room since the state was made.
	size() (keys, bytes int, evicted uint64)
}

// Compile checks every rule of f and compiles the enabled ones with the
// lists their match rules read. The first invalid rule is reported with
// its id and field; duplicate ids are rejected.
func Compile(f *RuleFile, lists Lists) (*RuleSet, error) {
	rs := &RuleSet{lists: lists}
	seen := map[string]bool{}
	for i := range f.Rules {
		spec := &f.Rules[i]
		r, err := compileRule(spec, lists)
		if err != nil {
			var fe *fieldError
			if errors.As(err, &fe) {
				if fe.rule == "" {
					fe.rule = spec.ID
					if fe.rule == "" {
						fe.rule = "#" + strconv.Itoa(i+1)
					}
				}
				return nil, fmt.Errorf("cannot compile rules: %w", fe)
			}
			return nil, fmt.Errorf("cannot compile rule %q: %w", spec.ID, err)
		}
		if seen[spec.ID] {
			return nil, fmt.Errorf("cannot compile rules: %w", &fieldError{rule: spec.ID, field: "id", msg: "duplicate rule id"})
		}
		seen[spec.ID] = true
		if r != nil {
			rs.rules = append(rs.rules, r)
		}
	}
	return rs, nil
}

// Load parses and compiles a rule file.
func Load(data []byte, lists Lists) (*RuleSet, error) {
	f, err := Parse(data)
	if err != nil {
		return nil, err
	}
	return Compile(f, lists)
}

func compileRule(spec *RuleSpec, lists Lists) (*rule, error) {
	if !idPattern.MatchString(spec.ID) {
		return nil, &fieldError{field: "id", msg: "must be 1–128 letters, digits, '.', '_' or '-', got " + quote(spec.ID)}
	}
	if !spec.Severity.Valid() {
		return nil, &fieldError{field: "severity", msg: "must be critical, high, medium or low, got " + quote(string(spec.Severity))}
	}
	r := &rule{id: spec.ID, severity: spec.Severity}
	if len(spec.Types) == 0 {
		r.types = ^uint32(0)
	}
	for _, name := range spec.Types {
		t := event.ParseType(name)
		if t == event.TypeUnknown {
			return nil, &fieldError{field: "types", msg: "unknown event type " + quote(name)}
		}
		r.types |= 1 << t
	}
	var err error
	if r.filter, err = compileFilter(spec.Filter); err != nil {
		return nil, &fieldError{field: "filter", msg: oneLine(err.Error())}
	}
	if r.summary, err = parseTemplate(spec.Summary); err != nil {
		return nil, &fieldError{field: "summary", msg: err.Error()}
	}
	if spec.Suppress < 0 {
		return nil, &fieldError{field: "suppress", msg: "must not be negative"}
	}
	if spec.UpdateInterval < 0 {
		return nil, &fieldError{field: "update_interval", msg: "must not be negative"}
	}
	r.updateEvery = spec.UpdateInterval.Milliseconds()

	n := 0
	var section string
	if spec.Match != nil {
		n, section = n+1, "match"
		r.kind, err = spec.Match.compile(lists)
	}
	if spec.Threshold != nil {
		n, section = n+1, "threshold"
		r.kind, err = spec.Threshold.compile()
	}
	if spec.Velocity != nil {
		n, section = n+1, "velocity"
		r.kind, err = spec.Velocity.compile()
	}
	if spec.Sequence != nil {
		n, section = n+1, "sequence"
		r.kind, err = spec.Sequence.compile()
	}
	if spec.Absence != nil {
		n, section = n+1, "absence"
		r.kind, err = spec.Absence.compile()
	}
	if spec.Geofence != nil {
		n, section = n+1, "geofence"
		r.kind, err = spec.Geofence.compile()
	}
	if spec.CoOccurrence != nil {
		n, section = n+1, "cooccurrence"
		r.kind, err = spec.CoOccurrence.compile()
	}
	switch {
	case n == 0:
		return nil, &fieldError{field: "kind", msg: "needs one kind section: match, threshold, velocity, sequence, absence, geofence or cooccurrence"}
	case n > 1:
		return nil, &fieldError{field: "kind", msg: "has more than one kind section"}
	}
	if err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			fe.field = section + "." + fe.field
			return nil, fe
		}
		return nil, &fieldError{field: section, msg: err.Error()}
	}
	r.suppress = spec.Suppress.Milliseconds()
	if r.suppress == 0 {
		r.suppress = r.kind.window().Milliseconds()
	}
	if r.suppress == 0 {
		r.suppress = (10 * time.Minute).Milliseconds()
	}
	if _, sticky := r.kind.(*absenceRule); !sticky && r.updateEvery > r.suppress {
		// A held update must fall due before its alert can end quietly.
		return nil, &fieldError{field: "update_interval", msg: "must not exceed suppress (" + (time.Duration(r.suppress) * time.Millisecond).String() + ")"}
	}
	// The fingerprint decides whether a reloaded rule keeps its state.
	out, _ := yaml.Marshal(spec)
	r.fingerprint = sha256.Sum256(out)
	if spec.Enabled != nil && !*spec.Enabled {
		return nil, nil
	}
	return r, nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// durationField checks a required positive duration.
func durationField(name string, d time.Duration) error {
	if d <= 0 {
		return &fieldError{field: name, msg: "must be a positive duration, got " + d.String()}
	}
	return nil
}

// Horizon returns how far back in event time the rule set looks: the
// longest horizon of its rules (see rule.horizon). A restart that replays
// this much of the input rebuilds every window and every situation that
// can still be open, except those that evidence keeps open for longer
// (they are restored from the alerts topic instead; see Role).
func (rs *RuleSet) Horizon() time.Duration {
	var h time.Duration
	for _, r := range rs.rules {
		h = max(h, r.horizon())
	}
	return h
}

// horizon is how far back in event time r looks: its window or
// suppression, the dwell of a geofence, and for an absence rule the
// silence, the group's wait and the recovery together (a key silent for
// longer has an alert, which a restart reads back).
func (r *rule) horizon() time.Duration {
	h := max(r.kind.window(), time.Duration(r.suppress)*time.Millisecond)
	ms := func(v int64) time.Duration { return time.Duration(v) * time.Millisecond }
	switch k := r.kind.(type) {
	case *geofenceRule:
		h = max(h, ms(k.dwell+k.gap))
	case *absenceRule:
		h = max(h, ms(k.silence+k.wait+k.recover))
	}
	return h
}
