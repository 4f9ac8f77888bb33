package e2e

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/simulators"
	"citywatch/store"
)

// This file holds the machinery of TestCrashLoop: the role processes and
// their killer, the planted incidents, and the checks of what the topics
// and ClickHouse hold at the end.

// crashBuild builds the citywatch binary into a directory of the test's
// own, with the race detector if race, and returns its path.
func crashBuild(t *testing.T, race bool) string {
	t.Helper()
	goBin, err := exec.LookPath("go") // go test puts GOROOT/bin first on PATH
	if err != nil {
		t.Fatalf("cannot find the go command to build citywatch: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "citywatch")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, goBin, append(args, "./cmd/citywatch")...)
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cannot build citywatch: %v\n%s", err, out)
	}
	return bin
}

// crashEnv returns the environment of the role processes: the test's own
// without any CITYWATCH_ variable (make exports some), then vars.
func crashEnv(vars map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CITYWATCH_") {
			env = append(env, kv)
		}
	}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	slices.Sort(env)
	return env
}

// crashConfig is the configuration file of the role processes. Consumer
// groups notice a member killed without a word after session_timeout (6 s
// is the least the broker allows), not after the default 30 s, so that a
// kill costs seconds, not half a minute.
//
// The rules' lateness is -crashloop.lateness, the default 5 s unless
// told. While ingest is down its group has raw input it has not
// committed, and the clock does not move the rules' watermark past the
// newest event (rules.upstream_group); a partition that a dead member of
// ingest's group or of the rules' own holds, or that catches up after
// such a stall, holds the watermark at its first waiting message
// (rules.stallWatch), so that live input is on time when it comes; and a
// rules process that restarts while ingest writes out such a backlog
// replays it with the watermark held as far as live may have held it,
// judging late only what a device sent late (rules.Role, "Restart").
const crashConfig = `log_level: info
kafka:
  partitions: %d
  session_timeout: %s
  heartbeat_interval: 1s
  rebalance_timeout: %s
ingest:
  workers: %d
rules:
  lateness: %s
  shards: %d
dispatch:
  accept_timeout: %s
sink:
  workers: %d
  max_wait: 200ms
`

// The consumer groups' timeouts in the loop (see crashConfig).
//
// The rebalance timeout is shorter than kafka-go's 5 s of slack plus the
// session: the in-process broker restarts a rebalance's timer at every
// join, where Kafka keeps the one it started with, and it waits for the
// killed process's members, which never join. A live member whose join
// request times out (after 5 s plus the rebalance timeout) joins again a
// second later; with two members and a 10 s timeout those joins came
// less than 10 s apart for ever, so the timer never fired and ingest's
// group stayed in PreparingRebalance to the end of the run (seed
// 1795754672702833194). With 5 s two members' joins leave a gap of 5.5 s
// at least: the timer fires, dropping the dead members.
const (
	crashSessionTimeout   = 6 * time.Second
	crashRebalanceTimeout = 5 * time.Second
)

// crashProc is one run of a role's process, from its start to its exit.
type crashProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // the exit, valid after done
}

// crashRole is one role run as its own process, started, killed and
// restarted by the crash loop. Each start appends to the role's log file.
type crashRole struct {
	name string
	bin  string
	// args are the command's arguments; nil means run --roles name.
	args    []string
	env     []string
	logPath string

	proc      *crashProc // nil while down
	restartAt time.Time  // while down: when to start again
	starts    int
	kills     int
	exits     []string // exits the loop did not cause
}

// start starts the role's process. Its goroutine, which only waits for
// the exit, is the role's: kill and stop wait for it.
func (r *crashRole) start() error {
	f, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("cannot open log of %s: %w", r.name, err)
	}
	defer f.Close() // the child has its own descriptor
	r.starts++
	fmt.Fprintf(f, "=== crash loop: start %d of %s at %s\n", r.starts, r.name, time.Now().Format(time.RFC3339Nano))
	args := r.args
	if args == nil {
		args = []string{"run", "--roles", r.name}
	}
	cmd := exec.Command(r.bin, args...)
	cmd.Env = r.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot start %s: %w", r.name, err)
	}
	p := &crashProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	r.proc, r.restartAt = p, time.Time{}
	return nil
}

// up reports whether the role's process is running (as far as the loop
// knows: exited reports an exit of its own).
func (r *crashRole) up() bool { return r.proc != nil }

// kill sends SIGKILL to the process and waits until it is gone.
func (r *crashRole) kill() {
	if r.proc == nil {
		return
	}
	// An error means the process is gone already; Wait tells how.
	_ = r.proc.cmd.Process.Kill()
	<-r.proc.done
	r.proc = nil
	r.kills++
}

// exited reports whether the process stopped on its own, and records
// how; the role is then down.
func (r *crashRole) exited() bool {
	if r.proc == nil {
		return false
	}
	select {
	case <-r.proc.done:
		r.exits = append(r.exits, fmt.Sprint(r.proc.err))
		r.proc = nil
		return true
	default:
		return false
	}
}

// stop ends the process, if any, at the end of the test: SIGTERM, then
// SIGKILL if it has not stopped within a minute. A clean stop closes the
// sink's ClickHouse connections before the test drops its database.
func (r *crashRole) stop() {
	if r.proc == nil {
		return
	}
	_ = r.proc.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.proc.done:
	case <-time.After(time.Minute):
		_ = r.proc.cmd.Process.Kill()
		<-r.proc.done
	}
	r.proc = nil
}

// logTail returns the last n lines of the role's log.
func (r *crashRole) logTail(n int) string {
	b, err := os.ReadFile(r.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// crashChaos kills the roles at random moments and restarts them after a
// random downtime. Kill times are drawn up front; the role of each kill is
// drawn from a bag holding every role once, so that every role is killed
// as often as the others, in a random order.
type crashChaos struct {
	rng      *rand.Rand
	roles    []*crashRole
	kills    []time.Duration // since the start, ascending
	next     int
	bag      []int
	downtime time.Duration // the longest pause before a restart
}

// newCrashChaos draws n kill times, gaps of mean every from 2 s on.
func newCrashChaos(rng *rand.Rand, roles []*crashRole, n int, every, downtime time.Duration) *crashChaos {
	c := &crashChaos{rng: rng, roles: roles, downtime: downtime}
	at := 2 * time.Second
	for range n {
		at += time.Duration((0.2 + 1.6*rng.Float64()) * float64(every))
		c.kills = append(c.kills, at)
	}
	return c
}

// end returns when the last restart is due, since the start.
func (c *crashChaos) end() time.Duration {
	if len(c.kills) == 0 {
		return 5 * time.Second
	}
	return c.kills[len(c.kills)-1] + c.downtime
}

// step restarts the roles whose downtime is over and kills those whose
// moment has come, at elapsed since the start.
func (c *crashChaos) step(t *testing.T, now time.Time, elapsed time.Duration) {
	t.Helper()
	for _, r := range c.roles {
		if !r.up() && !r.restartAt.IsZero() && !now.Before(r.restartAt) {
			if err := r.start(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for c.next < len(c.kills) && elapsed >= c.kills[c.next] {
		c.next++
		r := c.pick()
		if r == nil {
			continue // every role is down already
		}
		r.kill()
		r.restartAt = now.Add(time.Duration(c.rng.Float64() * float64(c.downtime)))
	}
}

// pick takes the next running role out of the bag, refilling it when
// empty; nil when no role runs.
func (c *crashChaos) pick() *crashRole {
	for range 2 * len(c.roles) {
		if len(c.bag) == 0 {
			c.bag = c.rng.Perm(len(c.roles))
		}
		for i, k := range c.bag {
			if c.roles[k].up() {
				c.bag = slices.Delete(c.bag, i, i+1)
				return c.roles[k]
			}
		}
		c.bag = nil
	}
	return nil
}

// crashProbeRule is the rule of the SLA probes: alerts the test writes to
// citywatch.alerts itself, with an event time far enough back that their
// SLA deadline falls within the run. No rule of the pack has this id, so
// the rules role leaves them alone; the dispatcher serves them as any
// alert.
const crashProbeRule = "e2e.sla_probe"

// crashProbe returns a low-severity alert at the centre of circle c whose
// SLA deadline (event time + the circle's tier) is in after now.
func crashProbe(n int, c *city.Circle, now time.Time, in time.Duration) event.Alert {
	subj := event.Subject{Kind: event.SubjectDevice, ID: fmt.Sprintf("crash-probe-%d", n)}
	at := now.Add(in - time.Duration(c.TierMinutes)*time.Minute).Truncate(time.Millisecond)
	return event.Alert{
		ID: event.AlertID(crashProbeRule, subj, at), Rule: crashProbeRule, Severity: event.SeverityLow,
		Status: event.AlertFiring, Subject: subj, EventTime: at, RaisedAt: now, Lat: c.Lat, Lon: c.Lon,
		CircleID: c.ID, TierMinutes: c.TierMinutes, Evidence: []string{}, Summary: "崩溃测试：时限探针",
	}
}

// crashScenario plants incidents every gap from 6 s to until: the rules
// whose situation completes at once (a match or a single event over a
// threshold), and a near miss beside most of them, so that crashes fall
// before, during and after each one. A hotlisted plate is planted once
// (a second sighting within the rule's 30 min would update the alert, not
// raise another); the watched buyer comes back, which must update his
// alert and raise no other.
func crashScenario(until, gap time.Duration) (*simulators.Scenario, error) {
	const watched = "420606198503142015"
	sc := &simulators.Scenario{
		Name:      "crashloop",
		Watchlist: []simulators.WatchlistEntry{{BuyerID: watched, Name: "陈建华", Severity: "high", Reason: "涉爆重点人员"}},
	}
	kinds := []simulators.Incident{
		{Rule: simulators.RuleViolence},
		{Rule: simulators.RuleBulkNoPermit},
		{Rule: simulators.RuleHotlist},
		{Rule: simulators.RuleWatchlist, BuyerID: watched},
		{Rule: simulators.RuleViolence, NearMiss: true},
		{Rule: simulators.RuleBulkNoPermit, NearMiss: true},
		{Rule: simulators.RuleVideoFault},
		{Rule: simulators.RuleBulkRepeat, Variant: "volume"},
		{Rule: simulators.RuleWatchlist, NearMiss: true, BuyerID: watched},
		{Rule: simulators.RuleBulkNoPermit, NearMiss: true, Variant: "small"},
	}
	letters := []rune("HJKLMNPQR")
	for i, at := 0, 6*time.Second; at <= until; i, at = i+1, at+gap {
		in := kinds[i%len(kinds)]
		in.At = at
		if in.Rule == simulators.RuleHotlist {
			h := len(sc.Hotlist)
			in.Plate = fmt.Sprintf("鄂F%c%04d", letters[h%len(letters)], 1000+h)
			sc.Hotlist = append(sc.Hotlist, simulators.HotlistEntry{Plate: in.Plate, Severity: "high", Reason: "盗抢车辆"})
		}
		sc.Incidents = append(sc.Incidents, in)
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("cannot plan incidents: %w", err)
	}
	return sc, nil
}

// crashProduced is what the test process wrote to the raw topics.
type crashProduced struct {
	ids      map[string]bool // valid events
	rejected int             // malformed messages, each a DLQ record
	resent   int             // resends of a valid event
}

func (p *crashProduced) note(m *simulators.Message) {
	switch m.Want {
	case simulators.WantEvent:
		p.ids[m.ID] = true
	case simulators.WantReject:
		p.rejected++
	case simulators.WantDuplicate:
		p.resent++
	}
}

// crashStorage is what ClickHouse holds of the produced events, counted
// the way the store's own queries count (FINAL, by id).
type crashStorage struct {
	stored         int // produced events stored at least once
	missing, twice []string
	extra          []string
	rejected       uint64
	rejectedWant   int
	err            error
	complete       bool // every produced event and rejected message is there
}

func crashCheckStorage(ctx context.Context, db *store.DB, p *crashProduced) crashStorage {
	s := crashStorage{rejectedWant: p.rejected}
	ids, err := db.EventIDs(ctx)
	if err != nil {
		s.err = err
		return s
	}
	rej, err := db.CountRejected(ctx)
	if err != nil {
		s.err = err
		return s
	}
	for _, n := range rej {
		s.rejected += n
	}
	for id := range p.ids {
		switch n := ids[id]; {
		case n == 0:
			s.missing = append(s.missing, id)
		case n > 1:
			s.twice = append(s.twice, id)
		}
	}
	for id := range ids {
		if !p.ids[id] {
			s.extra = append(s.extra, id)
		}
	}
	slices.Sort(s.missing)
	slices.Sort(s.twice)
	slices.Sort(s.extra)
	s.stored = len(p.ids) - len(s.missing)
	s.complete = len(s.missing) == 0 && s.rejected >= uint64(p.rejected)
	return s
}

// crashAlerts is what citywatch.alerts holds.
type crashAlerts struct {
	msgs    []simulators.Alert      // every message, for Verify
	firings map[string]int          // firing messages per alert id
	firing  map[string]*event.Alert // the first firing message of each id
	breach  map[string]bool         // alerts that have a dispatch.sla_breach, by their id
	twice   []string                // alert ids with more than one firing message
}

func crashReadAlerts(ctx context.Context, t *testing.T, kc kafkaio.Config) *crashAlerts {
	t.Helper()
	a := &crashAlerts{firings: map[string]int{}, firing: map[string]*event.Alert{}, breach: map[string]bool{}}
	for _, m := range readTopic(ctx, t, kc, kc.Topic(kafkaio.TopicAlerts)) {
		sa, err := simulators.ParseAlert(m.Value)
		if err != nil {
			t.Fatalf("%v: %s", err, m.Value)
		}
		a.msgs = append(a.msgs, sa)
		ea, err := event.DecodeAlert(m.Value)
		if err != nil {
			t.Fatalf("%v: %s", err, m.Value)
		}
		if ea.Status != event.AlertFiring {
			continue
		}
		a.firings[ea.ID]++
		if a.firing[ea.ID] == nil {
			a.firing[ea.ID] = &ea
		}
		if ea.Rule == simulators.RuleSLABreach {
			a.breach[ea.Subject.ID] = true
		}
	}
	for id, n := range a.firings {
		if n > 1 {
			a.twice = append(a.twice, fmt.Sprintf("%s (%s) ×%d", id, a.firing[id].Rule, n))
		}
	}
	slices.Sort(a.twice)
	return a
}

// crashDispatches is what citywatch.dispatches holds.
type crashDispatches struct {
	msgs []event.Dispatch
	// twice lists the messages sent more than once: the same alert, unit
	// and state (CONTRACT.md section 4: the id is deterministic per alert
	// and unit, and each state is reached once).
	twice    []string
	assigned int
}

func crashReadDispatches(ctx context.Context, t *testing.T, kc kafkaio.Config) *crashDispatches {
	t.Helper()
	d := &crashDispatches{}
	type key struct{ alert, unit, status string }
	n := map[key]int{}
	for _, m := range readTopic(ctx, t, kc, kc.Topic(kafkaio.TopicDispatches)) {
		x, err := event.DecodeDispatch(m.Value)
		if err != nil {
			t.Fatalf("%v: %s", err, m.Value)
		}
		d.msgs = append(d.msgs, x)
		n[key{x.AlertID, x.UnitID, string(x.Status)}]++
		if x.Status == event.DispatchAssigned {
			d.assigned++
		}
	}
	for k, c := range n {
		if c > 1 {
			d.twice = append(d.twice, fmt.Sprintf("alert %s unit %q %s ×%d", k.alert, k.unit, k.status, c))
		}
	}
	slices.Sort(d.twice)
	return d
}

// crashTimers is the check that no timer of the dispatcher was forgotten
// across the kills: every assignment whose acceptance deadline passed
// before cut was answered or reassigned (the reassignment at exactly its
// assignment time + the timeout, as the dispatcher promises across
// restarts), and every dispatched alert whose SLA deadline passed before
// cut has a unit on scene or its dispatch.sla_breach. (The dispatcher
// also lets the SLA of an alert resolved before its deadline lapse; no
// rule of the pack resolves within a tier's minutes.)
type crashTimers struct {
	accept, slas    int // deadlines passed before cut, checked
	reassigned      int
	breached, scene int
	open            []string // deadlines passed without their outcome
	wrongTime       []string
	notDue          int // acceptance and SLA deadlines after cut
}

func crashCheckTimers(as *crashAlerts, ds *crashDispatches, acceptTimeout time.Duration, cut time.Time) crashTimers {
	var c crashTimers
	type lifecycle struct {
		assigned *event.Dispatch
		ended    bool
		reassign *event.Dispatch
	}
	byID := map[string]*lifecycle{}
	type alertDispatch struct {
		tier    int
		onScene bool
	}
	alerts := map[string]*alertDispatch{}
	var order []string
	for i := range ds.msgs {
		d := &ds.msgs[i]
		a := alerts[d.AlertID]
		if a == nil {
			a = &alertDispatch{}
			alerts[d.AlertID] = a
			order = append(order, d.AlertID)
		}
		a.tier = max(a.tier, d.TierMinutes)
		if d.Status == event.DispatchOnScene {
			a.onScene = true
		}
		if d.UnitID == "" {
			continue // an escalation that found no unit
		}
		l := byID[d.ID]
		if l == nil {
			l = &lifecycle{}
			byID[d.ID] = l
		}
		switch d.Status {
		case event.DispatchAssigned:
			l.assigned = d
		case event.DispatchAccepted, event.DispatchDeclined, event.DispatchEnRoute, event.DispatchOnScene, event.DispatchCleared:
			l.ended = true
		case event.DispatchReassigned:
			l.ended, l.reassign = true, d
		}
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		l := byID[id]
		if l.assigned == nil {
			continue
		}
		due := l.assigned.Time.Add(acceptTimeout)
		if l.reassign != nil {
			if !l.reassign.Time.Equal(due) {
				c.wrongTime = append(c.wrongTime, fmt.Sprintf("dispatch %s (alert %s, unit %s) assigned at %s reassigned at %s, want %s",
					id, l.assigned.AlertID, l.assigned.UnitID, crashStamp(l.assigned.Time), crashStamp(l.reassign.Time), crashStamp(due)))
			}
		}
		if due.After(cut) {
			c.notDue++
			continue
		}
		c.accept++
		if l.reassign != nil {
			c.reassigned++
		}
		if !l.ended {
			c.open = append(c.open, fmt.Sprintf("dispatch %s (alert %s, unit %s) assigned at %s: neither answered nor reassigned by %s",
				id, l.assigned.AlertID, l.assigned.UnitID, crashStamp(l.assigned.Time), crashStamp(due)))
		}
	}
	for _, id := range order {
		a := alerts[id]
		f := as.firing[id]
		if f == nil {
			// The dispatcher serves only alerts it read firing.
			c.open = append(c.open, fmt.Sprintf("alert %s has dispatches but no firing message", id))
			continue
		}
		deadline := f.EventTime.Add(time.Duration(a.tier) * time.Minute)
		if deadline.After(cut) {
			c.notDue++
			continue
		}
		c.slas++
		switch {
		case as.breach[id]:
			c.breached++
		case a.onScene:
			c.scene++
		default:
			c.open = append(c.open, fmt.Sprintf("alert %s (%s, tier %d) had its SLA deadline at %s: no unit on scene and no %s",
				id, f.Rule, a.tier, crashStamp(deadline), simulators.RuleSLABreach))
		}
	}
	return c
}

func crashStamp(t time.Time) string { return t.UTC().Format("15:04:05.000") }

// crashLagging returns the partitions whose consumer group has not
// committed up to their end, with the lag.
func crashLagging(ctx context.Context, kc kafkaio.Config, groups map[string][]string) ([]string, error) {
	var out []string
	client := kc.Client()
	for _, g := range slices.Sorted(maps.Keys(groups)) {
		lag, err := kafkaio.Lag(ctx, client, g, kc.Topics(groups[g]...))
		if err != nil {
			return nil, fmt.Errorf("cannot measure the lag of %s: %w", g, err)
		}
		for _, topic := range slices.Sorted(maps.Keys(lag)) {
			for _, p := range slices.Sorted(maps.Keys(lag[topic])) {
				if n := lag[topic][p]; n > 0 {
					out = append(out, fmt.Sprintf("%s on %s/%d: %d", g, topic, p, n))
				}
			}
		}
	}
	return out, nil
}

// crashPanics returns the lines of a role's log that tell of a panic or a
// fatal runtime error: a process that died on its own, not by the loop.
func crashPanics(log []byte) []string {
	var out []string
	for line := range bytes.Lines(log) {
		if bytes.HasPrefix(line, []byte("panic:")) || bytes.HasPrefix(line, []byte("fatal error:")) {
			out = append(out, strings.TrimSpace(string(line)))
		}
	}
	return out
}

// crashDump leaves the truth and the alert and dispatch messages of a run
// in dir, for citywatch sim verify and for reading.
func crashDump(ctx context.Context, t *testing.T, kc kafkaio.Config, dir string, truth *simulators.Truth) {
	t.Helper()
	tb, err := truth.JSON()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"truth.json": tb}
	for name, topic := range map[string]string{"alerts.jsonl": kafkaio.TopicAlerts, "dispatches.jsonl": kafkaio.TopicDispatches} {
		var b []byte
		for _, m := range readTopic(ctx, t, kc, kc.Topic(topic)) {
			b = append(append(b, m.Value...), '\n')
		}
		files[name] = b
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// crashGhosts returns how many more members group has than the role
// process runs (want) while the group is stable. Besides a killed
// process's members awaiting their session timeout, these may be members
// left by a process killed while its join was pending: the in-process
// broker (kfake) starts a member's session timer only once its join
// answer is delivered, and the answer to a killed process is not, so the
// member stays, holding its partitions unread, until the next rebalance
// drops it. Kafka times such a member out; production has none.
func crashGhosts(ctx context.Context, kc kafkaio.Config, group string, want int) (int, error) {
	res, err := kc.Client().DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil {
		return 0, fmt.Errorf("cannot describe group %s: %w", group, err)
	}
	n := 0
	for _, g := range res.Groups {
		if g.Error != nil {
			return 0, fmt.Errorf("cannot describe group %s: %w", group, g.Error)
		}
		if g.GroupState == "Stable" {
			n += len(g.Members)
		}
	}
	return max(n-want, 0), nil
}

// crashGhostWatch finds the members of killed processes that the broker
// keeps with no session timeout (crashGhosts): a group stable with more
// members than its process runs for longer than a session timeout. It has
// such a group rebalance (crashNudge) in the background, as the session
// timeout would have, so that their partitions are read again within
// seconds rather than at the next restart or never.
type crashGhostWatch struct {
	t       *testing.T
	kc      kafkaio.Config
	groups  map[string][]string // topics by group
	members map[string]int      // members of the role's process, by group
	next    time.Time
	since   map[string]time.Time // since when the group has had too many members
	busy    map[string]bool
	done    chan string
	wg      sync.WaitGroup
	dropped int
}

func newCrashGhostWatch(t *testing.T, kc kafkaio.Config, groups map[string][]string, members map[string]int) *crashGhostWatch {
	return &crashGhostWatch{t: t, kc: kc, groups: groups, members: members,
		since: map[string]time.Time{}, busy: map[string]bool{}, done: make(chan string, len(groups))}
}

// check looks at the groups once a second and starts a nudge of each
// group that has held too many members for a session timeout and more.
func (w *crashGhostWatch) check(ctx context.Context, now time.Time) {
	for drained := false; !drained; {
		select {
		case g := <-w.done:
			w.busy[g] = false
		default:
			drained = true
		}
	}
	if now.Before(w.next) {
		return
	}
	w.next = now.Add(time.Second)
	for _, g := range slices.Sorted(maps.Keys(w.groups)) {
		if w.busy[g] {
			continue
		}
		n, err := crashGhosts(ctx, w.kc, g, w.members[g])
		if err != nil || n == 0 {
			delete(w.since, g)
			continue
		}
		if _, ok := w.since[g]; !ok {
			w.since[g] = now
		}
		if now.Sub(w.since[g]) <= crashSessionTimeout+time.Second {
			continue
		}
		w.t.Logf("group %s has held %d members of killed processes for %s; making it rebalance: %s",
			g, n, now.Sub(w.since[g]).Round(time.Second), crashDescribeGroup(ctx, w.kc, g))
		delete(w.since, g)
		w.dropped += n
		w.busy[g] = true
		w.wg.Go(func() {
			if err := crashNudge(ctx, w.kc, g, w.groups[g]); err != nil {
				w.t.Logf("nudge of %s: %v", g, err)
			}
			w.done <- g
		})
	}
}

// wait waits for the nudges under way.
func (w *crashGhostWatch) wait() { w.wg.Wait() }

// crashNudge makes group rebalance, as a Kafka broker's session timeout
// would, so that the broker drops the members of killed processes (see
// crashGhosts): a member of the test's joins the group and leaves again.
// The role processes' members rejoin and resume from their committed
// offsets. The broker may hold the join past kafka-go's default deadline
// (it restarts the rebalance timeout at every member's rejoin), hence the
// long Timeout; a join that fails anyway has made the group rebalance.
func crashNudge(ctx context.Context, kc kafkaio.Config, group string, topics []string) error {
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: group, Brokers: kc.Brokers, Dialer: kc.Dialer(), Topics: kc.Topics(topics...),
		HeartbeatInterval: time.Second, SessionTimeout: crashSessionTimeout, RebalanceTimeout: crashRebalanceTimeout,
		Timeout: 30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("cannot join group %s: %w", group, err)
	}
	defer cg.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := cg.Next(ctx); err != nil {
		return fmt.Errorf("cannot join group %s: %w", group, err)
	}
	return nil
}

// crashFirst returns the first n of ids, for messages.
func crashFirst(ids []string, n int) []string { return ids[:min(n, len(ids))] }

// crashDescribeGroup returns a consumer group's state, members and their
// partitions, for the report of a group that does not catch up.
func crashDescribeGroup(ctx context.Context, kc kafkaio.Config, group string) string {
	res, err := kc.Client().DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil {
		return fmt.Sprintf("%s: cannot describe: %v", group, err)
	}
	var b strings.Builder
	for _, g := range res.Groups {
		fmt.Fprintf(&b, "%s: %s (error %v)", g.GroupID, g.GroupState, g.Error)
		for _, m := range g.Members {
			fmt.Fprintf(&b, "; member %s at %s:", m.MemberID, m.ClientHost)
			for _, a := range m.MemberAssignments.Topics {
				fmt.Fprintf(&b, " %s%v", a.Topic, a.Partitions)
			}
		}
	}
	return b.String()
}
