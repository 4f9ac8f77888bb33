package simulators

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Alert is the part of an alert message (CONTRACT.md section 3) that
// Verify reads.
type Alert struct {
	ID        string    `json:"id"`
	Rule      string    `json:"rule"`
	Status    string    `json:"status"`
	Subject   Subject   `json:"subject"`
	EventTime time.Time `json:"event_time"`
	RaisedAt  time.Time `json:"raised_at"`
}

// Statuses of alert messages.
const (
	StatusFiring   = "firing"
	StatusUpdated  = "updated"
	StatusResolved = "resolved"
)

// ParseAlert decodes one alert message.
func ParseAlert(b []byte) (Alert, error) {
	var a Alert
	if err := json.Unmarshal(b, &a); err != nil {
		return Alert{}, fmt.Errorf("cannot decode alert: %w", err)
	}
	if a.ID == "" || a.Rule == "" {
		return Alert{}, errors.New("cannot decode alert: id and rule are required")
	}
	return a, nil
}

// ReadAlerts reads alert messages, one JSON object a line (blank lines
// are skipped).
func ReadAlerts(r io.Reader) ([]Alert, error) {
	var out []Alert
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		a, err := ParseAlert(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, a)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read alerts: %w", err)
	}
	return out, nil
}

// VerifyOptions sets how Verify matches alerts to a truth.
type VerifyOptions struct {
	// Rules limits the check to these rule ids; expectations of other
	// rules are counted as not checked and their alerts are ignored. Empty
	// means every rule.
	Rules []string
	// Slack widens every expectation's window on both sides, for runs
	// whose device clocks are off (the --skew fault).
	Slack time.Duration
}

// Report is the outcome of Verify: per rule and in total, with the
// expectations and alerts behind every failure.
type Report struct {
	Scenario string
	Rules    []RuleReport // by rule id
	Total    RuleReport   // Rule is "total"

	// Missed are the expectations to raise that no alert matched.
	Missed []Expectation
	// MustNot are the near misses that an alert matched.
	MustNot []Finding
	// Duplicates are alerts that matched an expectation another alert had
	// already matched: one planted situation raised twice.
	Duplicates []Finding
	// FalseAlarms are alerts of the checked rules, during the run, that
	// match no expectation.
	FalseAlarms []Alert
	// NotChecked counts the expectations of rules outside
	// VerifyOptions.Rules.
	NotChecked int
	// Outside counts the alerts of the checked rules whose event time is
	// before the run's start or after its end (an earlier run on the same
	// topic, or the silence of every device once the run stops).
	Outside int
}

// Finding is an alert matched to an expectation.
type Finding struct {
	Expectation Expectation
	Alert       Alert
}

// RuleReport is one rule's figures.
type RuleReport struct {
	Rule string
	// Expected is the number of incidents to raise, Detected of those
	// that an alert matched.
	Expected, Detected int
	// NearMisses is the number of near misses planted, MustNotRaised of
	// those that an alert matched.
	NearMisses, MustNotRaised int
	Duplicates                int
	FalseAlarms               int
	// Latency is raised_at minus event_time of the first alert of each
	// detected incident: the device time of the planted event that made
	// the situation (for a silence, the moment it reached the rule's
	// limit) to the alert.
	Latency Latency
}

// Missed returns the incidents to raise that no alert matched.
func (r RuleReport) Missed() int { return r.Expected - r.Detected }

// Recall returns Detected/Expected, 1 when nothing was expected.
func (r RuleReport) Recall() float64 {
	if r.Expected == 0 {
		return 1
	}
	return float64(r.Detected) / float64(r.Expected)
}

// Latency summarises detection latencies.
type Latency struct {
	N             int
	P50, P90, Max time.Duration
}

func latencyOf(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	rank := func(p float64) time.Duration {
		// Nearest rank: the smallest value with at least p of the values
		// at or below it.
		i := int(p*float64(len(ds))+0.999999) - 1
		return ds[min(max(i, 0), len(ds)-1)]
	}
	return Latency{N: len(ds), P50: rank(0.5), P90: rank(0.9), Max: ds[len(ds)-1]}
}

// OK reports whether every incident was detected and no near miss raised
// an alert.
func (r *Report) OK() bool { return len(r.Missed) == 0 && len(r.MustNot) == 0 }

// Verify matches alert messages to the expectations of a truth and
// reports recall, near misses that fired, false alarms and latency per
// rule.
//
// Messages with the same id are one alert, raised by its firing message
// (its first message when the firing one is not in alerts: a read that
// started late); updated and resolved messages do not count again. An
// alert matches an expectation of the same rule and subject whose window
// [From-Slack, To+Slack] holds the alert's event time. It goes to the
// earliest such expectation to raise that is not yet detected, else it is
// a duplicate of one that is, else it is a near miss that fired; an alert
// that matches nothing is a false alarm when its event time is within the
// run, and is counted as outside otherwise.
func Verify(t *Truth, alerts []Alert, opt VerifyOptions) *Report {
	inScope := func(rule string) bool { return len(opt.Rules) == 0 || slices.Contains(opt.Rules, rule) }
	rep := &Report{Scenario: t.Scenario}
	byRule := map[string]*RuleReport{}
	ruleOf := func(id string) *RuleReport {
		r := byRule[id]
		if r == nil {
			r = &RuleReport{Rule: id}
			byRule[id] = r
		}
		return r
	}

	type key struct{ rule, kind, id string }
	exps := map[key][]int{}
	for i, x := range t.Expect {
		if !inScope(x.Rule) {
			rep.NotChecked++
			continue
		}
		r := ruleOf(x.Rule)
		if x.Raise {
			r.Expected++
		} else {
			r.NearMisses++
		}
		k := key{x.Rule, x.Subject.Kind, x.Subject.ID}
		exps[k] = append(exps[k], i)
	}
	for _, k := range exps {
		slices.SortStableFunc(k, func(a, b int) int { return t.Expect[a].From.Compare(t.Expect[b].From) })
	}

	raised := firstMessages(alerts)
	detected := make([]bool, len(t.Expect))
	fired := make([]bool, len(t.Expect))
	lat := map[string][]time.Duration{}
	for _, a := range raised {
		if !inScope(a.Rule) {
			continue
		}
		var first, dup, near = -1, -1, -1
		for _, i := range exps[key{a.Rule, a.Subject.Kind, a.Subject.ID}] {
			x := &t.Expect[i]
			if a.EventTime.Before(x.From.Add(-opt.Slack)) || a.EventTime.After(x.To.Add(opt.Slack)) {
				continue
			}
			switch {
			case x.Raise && !detected[i] && first < 0:
				first = i
			case x.Raise && detected[i] && dup < 0:
				dup = i
			case !x.Raise && near < 0:
				near = i
			}
		}
		r := ruleOf(a.Rule)
		switch {
		case first >= 0:
			detected[first] = true
			r.Detected++
			lat[a.Rule] = append(lat[a.Rule], a.RaisedAt.Sub(a.EventTime))
		case dup >= 0:
			r.Duplicates++
			rep.Duplicates = append(rep.Duplicates, Finding{Expectation: t.Expect[dup], Alert: a})
		case near >= 0:
			if !fired[near] {
				fired[near] = true
				r.MustNotRaised++
			}
			rep.MustNot = append(rep.MustNot, Finding{Expectation: t.Expect[near], Alert: a})
		case !t.Start.IsZero() && a.EventTime.Before(t.Start.Add(-opt.Slack)),
			!t.End.IsZero() && a.EventTime.After(t.End.Add(opt.Slack)):
			rep.Outside++
		default:
			r.FalseAlarms++
			rep.FalseAlarms = append(rep.FalseAlarms, a)
		}
	}
	for i, x := range t.Expect {
		if inScope(x.Rule) && x.Raise && !detected[i] {
			rep.Missed = append(rep.Missed, x)
		}
	}

	rep.Total.Rule = "total"
	var all []time.Duration
	for _, r := range byRule {
		r.Latency = latencyOf(lat[r.Rule])
		all = append(all, lat[r.Rule]...)
		rep.Rules = append(rep.Rules, *r)
		tt := &rep.Total
		tt.Expected += r.Expected
		tt.Detected += r.Detected
		tt.NearMisses += r.NearMisses
		tt.MustNotRaised += r.MustNotRaised
		tt.Duplicates += r.Duplicates
		tt.FalseAlarms += r.FalseAlarms
	}
	rep.Total.Latency = latencyOf(all)
	slices.SortFunc(rep.Rules, func(a, b RuleReport) int { return strings.Compare(a.Rule, b.Rule) })
	return rep
}

// firstMessages returns one message per alert id, the one that raised it,
// ordered by event time, then raise time, then id.
func firstMessages(alerts []Alert) []Alert {
	idx := map[string]int{}
	var out []Alert
	for _, a := range alerts {
		i, ok := idx[a.ID]
		switch {
		case !ok:
			idx[a.ID] = len(out)
			out = append(out, a)
		case out[i].Status != StatusFiring && (a.Status == StatusFiring || a.RaisedAt.Before(out[i].RaisedAt)):
			out[i] = a
		case a.Status == StatusFiring && a.RaisedAt.Before(out[i].RaisedAt):
			// The same alert raised again (a replay after a restart):
			// the earliest raise counts.
			out[i] = a
		}
	}
	slices.SortStableFunc(out, func(a, b Alert) int {
		if c := a.EventTime.Compare(b.EventTime); c != 0 {
			return c
		}
		if c := a.RaisedAt.Compare(b.RaisedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Write prints the report: a table of the rules, then every miss, near
// miss that fired, duplicate and false alarm (at most maxLines of each
// kind; 0 means all).
func (r *Report) Write(w io.Writer, maxLines int) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "rule\texpected\tdetected\trecall\tmissed\tnear misses\tmust-not raised\tduplicates\tfalse alarms\tlatency p50\tp90\tmax\t")
	row := func(x RuleReport) {
		l := func(d time.Duration) string {
			if x.Latency.N == 0 {
				return "-"
			}
			return d.Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t\n", x.Rule, x.Expected, x.Detected, x.Recall(),
			x.Missed(), x.NearMisses, x.MustNotRaised, x.Duplicates, x.FalseAlarms, l(x.Latency.P50), l(x.Latency.P90), l(x.Latency.Max))
	}
	for _, x := range r.Rules {
		row(x)
	}
	row(r.Total)
	if err := tw.Flush(); err != nil {
		return err
	}
	var b strings.Builder
	if r.NotChecked > 0 {
		fmt.Fprintf(&b, "not checked: %d expectations of rules outside the check\n", r.NotChecked)
	}
	if r.Outside > 0 {
		fmt.Fprintf(&b, "outside the run: %d alerts with an event time before its start or after its end\n", r.Outside)
	}
	list := func(title string, n int, line func(i int) string) {
		if n == 0 {
			return
		}
		fmt.Fprintf(&b, "%s (%d):\n", title, n)
		for i := range n {
			if maxLines > 0 && i == maxLines {
				fmt.Fprintf(&b, "  … %d more\n", n-i)
				break
			}
			b.WriteString("  " + line(i) + "\n")
		}
	}
	list("missed", len(r.Missed), func(i int) string {
		x := r.Missed[i]
		return fmt.Sprintf("%s %s:%s %s – %s: %s", x.Rule, x.Subject.Kind, x.Subject.ID, stamp(x.From), stamp(x.To), x.Note)
	})
	finding := func(fs []Finding) func(i int) string {
		return func(i int) string {
			f := fs[i]
			return fmt.Sprintf("%s %s:%s at %s, alert %s: %s", f.Alert.Rule, f.Alert.Subject.Kind, f.Alert.Subject.ID,
				stamp(f.Alert.EventTime), f.Alert.ID, f.Expectation.Note)
		}
	}
	list("near misses that raised an alert", len(r.MustNot), finding(r.MustNot))
	list("duplicates", len(r.Duplicates), finding(r.Duplicates))
	list("false alarms", len(r.FalseAlarms), func(i int) string {
		a := r.FalseAlarms[i]
		return fmt.Sprintf("%s %s:%s at %s, alert %s", a.Rule, a.Subject.Kind, a.Subject.ID, stamp(a.EventTime), a.ID)
	})
	_, err := io.WriteString(w, b.String())
	return err
}

func stamp(t time.Time) string { return t.Format(time.RFC3339) }
