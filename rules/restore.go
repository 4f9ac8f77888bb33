package rules

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/kafkaio"
)

// restore rebuilds the engine's state from Kafka before the group joins:
// the alerts topic read back, the open alerts reopened, the input replayed
// with the check of replayCheck, the engine advanced to the present. The
// doc of Role says why and what it promises. Lost alerts it finds are
// queued; the caller writes them.
func (r *Role) restore(ctx context.Context) error {
	start := r.now()
	p := &r.progress
	p.begin(start)
	defer p.restoring.Store(false)
	horizon := r.horizon(r.eng.RuleSet())
	check, err := r.readAlerts(ctx, start.Add(-r.cfg.AlertsLookback))
	if err != nil {
		return fmt.Errorf("cannot restore rules state: %w", err)
	}
	check.until = start.Add(horizon).UnixMilli()

	r.mu.Lock()
	defer r.mu.Unlock()
	r.check = check
	r.eng.installPending()
	seeded := 0
	for _, k := range check.open() {
		if r.eng.seed(&k.latest) {
			seeded++
		}
	}

	replayed, from, err := r.replay(ctx, start)
	if err != nil {
		return fmt.Errorf("cannot restore rules state: %w", err)
	}
	r.eng.adoptSeeded()
	// Until the group gives the consumer its partitions (the killed
	// process's member times out first), the replayed partitions hold
	// the watermark: what arrives meanwhile is not late (see catchUp).
	r.catchUp.wait(start.Add(r.kc.SessionTimeout + r.kc.RebalanceTimeout))
	// The replay's own hold ends here; from now on the watermark waits
	// for what the stall watch finds, live. Its first poll tells whether
	// ingest is still draining a backlog (a restart amid one).
	r.mu.Unlock()
	r.awaitFirstPoll(ctx)
	r.mu.Lock()
	r.eng.Hold(r.holdLocked(start))
	r.scratch = r.eng.Advance(start, r.scratch[:0])
	r.queueLocked(start, r.scratch)
	r.log.Info("rules state restored",
		"alerts_read", check.read, "open_alerts", seeded, "replayed_events", replayed,
		"replayed_from", from, "lost_alerts_found", r.outbox.Len(), "took", r.now().Sub(start).String())
	return nil
}

// begin starts the report of a restore that began at start.
func (p *restoreProgress) begin(start time.Time) {
	p.replayed.Store(0)
	p.at.Store(0)
	p.start.Store(start.UnixMilli())
	p.restoring.Store(true)
}

// horizon returns how far back from its start a restore of rs replays
// (RoleConfig.Replay): the check of its alerts lasts that long.
func (r *Role) horizon(rs *RuleSet) time.Duration {
	if r.cfg.Replay != 0 {
		return r.cfg.Replay
	}
	return rs.Horizon() + replayMargin
}

// knownAlert is what the alerts topic holds of one alert.
type knownAlert struct {
	firing   bool        // its firing message was read
	resolved bool        // its resolved message was read
	shadow   bool        // a replay artefact: every message of it is dropped
	first    int64       // event time (Unix ms) of its oldest message read
	last     int64       // event time (Unix ms) of its newest message read
	latest   event.Alert // its last message
}

type ruleSubject struct {
	rule    string
	subject event.Subject
}

// replayCheck decides, for each message the engine emits after a start,
// whether the alerts topic already holds it.
type replayCheck struct {
	known     map[string]*knownAlert
	bySubject map[ruleSubject][]*knownAlert
	read      int
	// until is the watermark (Unix ms) after which no situation rebuilt
	// by the replay can still emit a message the topic holds.
	until int64
}

// keep reports whether a is news: not on the alerts topic already.
func (c *replayCheck) keep(a *event.Alert) bool {
	t := a.EventTime.UnixMilli()
	k := c.known[a.ID]
	if k == nil {
		if a.Status != event.AlertFiring {
			return true // a situation the replay opened and kept
		}
		// The topic shows this rule and subject in a situation that was
		// going on at t under another id: the replay began after its
		// first event. The new id and all its messages are artefacts.
		for _, o := range c.bySubject[ruleSubject{a.Rule, a.Subject}] {
			if t <= o.last && (t >= o.first || !o.firing) {
				c.known[a.ID] = &knownAlert{shadow: true}
				return false
			}
		}
		return true
	}
	if k.resolved || k.shadow {
		return false
	}
	switch a.Status {
	case event.AlertFiring:
		return false
	case event.AlertUpdated:
		if t <= k.last {
			return false
		}
		k.last = t
	case event.AlertResolved:
		k.resolved = true
	}
	return true
}

// readAlerts reads the alerts topic from the first message raised at or
// after since to its end.
func (r *Role) readAlerts(ctx context.Context, since time.Time) (*replayCheck, error) {
	c := &replayCheck{known: map[string]*knownAlert{}, bySubject: map[ruleSubject][]*knownAlert{}}
	parts, err := kafkaio.Partitions(ctx, r.kc, r.alertsTopic)
	if err != nil {
		return nil, err
	}
	raisedAt := func(m *kafka.Message) (int64, bool) {
		a, err := event.DecodeAlert(m.Value)
		return a.RaisedAt.UnixMilli(), err == nil
	}
	for _, p := range parts {
		pr, err := kafkaio.OpenPartition(ctx, r.kc, r.alertsTopic, p)
		if err != nil {
			return nil, err
		}
		from, err := pr.Search(pr.First, pr.End, since.UnixMilli(), raisedAt)
		if err == nil {
			pr.Next = from
			err = pr.Each(func(m *kafka.Message) {
				a, err := event.DecodeAlert(m.Value)
				if err != nil {
					r.log.Warn("cannot decode alert; skipped", "partition", m.Partition, "offset", m.Offset, "err", err)
					return
				}
				if !r.eng.ownsAlert(&a) {
					return // another shard's
				}
				c.add(&a)
			})
		}
		pr.Close()
		if err != nil {
			return nil, fmt.Errorf("cannot read back %s/%d: %w", r.alertsTopic, p, err)
		}
	}
	return c, nil
}

func (c *replayCheck) add(a *event.Alert) {
	c.read++
	t := a.EventTime.UnixMilli()
	k := c.known[a.ID]
	if k == nil {
		k = &knownAlert{first: t, last: t}
		c.known[a.ID] = k
		key := ruleSubject{a.Rule, a.Subject}
		c.bySubject[key] = append(c.bySubject[key], k)
	}
	k.first, k.last = min(k.first, t), max(k.last, t)
	switch a.Status {
	case event.AlertFiring:
		k.firing = true
	case event.AlertResolved:
		k.resolved = true
	}
	// Messages of one alert share a partition and are read in the order
	// they were written: this one is the newest so far.
	k.latest = *a
}

// replayMargin is how much further back than its horizon each rule
// looks in a start's replay (when RoleConfig.Replay is not set): the
// watermark lags the newest event by the lateness and any hold, and a
// scaled-out group, which keeps no input position, may have been down
// that long. An absence rule, whose horizon is a few minutes, would
// otherwise miss a key that fell silent just before the stop.
const replayMargin = time.Hour

// replay runs the input to the end of each partition at the start,
// partitions merged by event time, and records the end offsets for the
// consumer to skip. Each rule evaluates the events of its own horizon
// (Engine.replayFrom), counted back from the start or from the oldest
// input the group has not committed, whichever is earlier; records older
// than every rule that reads their type are passed over undecoded. The
// input the group never committed is replayed whatever its age. It
// returns the events replayed and the event time the longest-looking rule
// evaluated from. r.mu is held.
func (r *Role) replay(ctx context.Context, start time.Time) (int, time.Time, error) {
	parts, err := kafkaio.Partitions(ctx, r.kc, r.eventsTopic)
	if err != nil {
		return 0, time.Time{}, err
	}
	committed, err := r.committed(ctx, parts)
	if err != nil {
		return 0, time.Time{}, err
	}
	r.skipBelow = map[int]int64{}
	r.readTo = r.readTo[:0]
	rctx, cancel := context.WithCancel(ctx)
	var readers sync.WaitGroup
	var cursors []*replayCursor
	defer func() {
		cancel()
		readers.Wait()
	}()
	// Every partition is opened before any is read: a reader's first
	// fetches, started early, held up the broker's answers to the opens
	// still to come by several milliseconds each.
	prs, err := openPartitions(ctx, r.kc, r.eventsTopic, parts)
	if err != nil {
		return 0, time.Time{}, err
	}
	ref, err := r.oldestUncommitted(prs, committed, start)
	if err != nil {
		for _, pr := range prs {
			pr.Close()
		}
		return 0, time.Time{}, err
	}
	byType, earliest := r.eng.replayFrom(ref, r.cfg.Replay, replayMargin)
	defer r.eng.endReplay()
	since := time.UnixMilli(earliest)
	// The fuel purchases older than every other type's look come from the
	// buyers' topic, when it reaches back far enough, rather than from a
	// day of the events topic.
	fuel := byType[event.TypeFuelPurchase]
	bound := int64(math.MaxInt64) // fuel events before it come from side
	for t := range byType {
		if event.Type(t) != event.TypeFuelPurchase {
			bound = min(bound, byType[t])
		}
	}
	var side []*kafkaio.PartitionReader
	if bound > fuel {
		if side, err = r.openFuelSide(ctx, fuel); err != nil {
			for _, pr := range prs {
				pr.Close()
			}
			return 0, time.Time{}, err
		}
	}
	mainByType, mainSince := byType, since
	if side != nil {
		mainByType[event.TypeFuelPurchase] = bound
		mainSince = time.UnixMilli(bound)
	}
	for i, p := range parts {
		pr := prs[i]
		r.skipBelow[p] = pr.End
		c := newReplayCursor(p, r.eventsTopic, false)
		cursors = append(cursors, c)
		cp, ok := committed[p]
		if !ok {
			cp = -1
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			defer pr.Close()
			c.read(rctx, r, pr, mainSince, cp, &mainByType)
		}()
	}
	for _, pr := range side {
		c := newReplayCursor(pr.Partition, r.fuelTopic, true)
		cursors = append(cursors, c)
		readers.Add(1)
		go func() {
			defer readers.Done()
			defer pr.Close()
			c.read(rctx, r, pr, since, searchOnly, &byType)
		}()
	}
	for _, c := range cursors {
		if err := c.advance(); err != nil {
			return 0, time.Time{}, err
		}
	}
	n, counted := 0, 0
	late := r.eng.cfg.Lateness.Milliseconds()
	// The earliest head first; among equal times, the cursor taken least
	// recently. Times of whole seconds (GA/T 1400) or a device's burst
	// share a time across partitions, and always taking the lowest
	// partition drained them one after the other, with one reader
	// decoding while the others waited full.
	heads := newMergeHeap(cursors)
	for {
		if len(heads.cs) == 0 {
			// Every reader is done, or ctx ended them.
			if r.metrics != nil {
				r.metrics.replayed.Add(float64(n - counted))
			}
			if ctx.Err() != nil {
				return n, since, ctx.Err()
			}
			for p, end := range r.skipBelow {
				r.readLocked(p, end-1)
			}
			return n, since, nil
		}
		next := heads.take()
		e := next.head
		if side != nil && e.ev.Type == event.TypeFuelPurchase && next.side != (e.ev.Time.UnixMilli() < bound) {
			// Each purchase once: from the buyers' topic before bound,
			// from the events topic after.
			if err := heads.advance(); err != nil {
				return n, since, err
			}
			continue
		}
		// Every replayed event arrives at the start, as far as the
		// engine's clock goes: the watermark moves with the clock only
		// from the start on. Taking the event times as arrival times
		// would move it, at the first tick, by the lag of the input
		// behind the clock, and make the input still to come late. A
		// silence that spans the restart is therefore raised up to the
		// downtime later, with the same id.
		// As live (handler.Add): the watermark may not pass the newest
		// event of the partition furthest behind. A partition that an
		// upstream catching up has not filled yet holds the rest of the
		// replay back, so that its events, delivered after the restore,
		// are not late.
		t := clockTime(e.ev.Time, e.recv)
		// Within a partition the replay meets the input in the order
		// ingest wrote it, and ingest drains a backlog partition after
		// partition: an event that waited upstream while the rules were
		// live came after newer events of other raw partitions, with the
		// watermark held for it (stallWatch). The replay has no record of
		// that hold, so it holds as far as live may have held, StallMaxHold
		// behind the newest event. An event its device sent late, which no
		// hold waited for, is judged late as live judged it: its raw
		// record was published (kafkaio.PublishedHeader) more than the
		// lateness after it happened, and it is behind the newest event by
		// more than the lateness.
		ms := e.ev.Time.UnixMilli()
		queued := false
		// The newest event is the engine's maxEvent, this one included.
		if !e.pub.IsZero() && e.pub.UnixMilli()-ms > late && ms < r.eng.maxEvent-late {
			r.eng.countLate()
		} else {
			newest := time.UnixMilli(max(r.eng.maxEvent, t.UnixMilli()))
			if !next.side {
				r.catchUp.observe(next.partition, t.UnixMilli(), start)
			}
			r.eng.Hold(earlier(r.holdLocked(start), newest.Add(-r.cfg.StallMaxHold)))
			r.scratch = r.eng.ProcessReceived(start, &e.ev, e.recv, r.scratch[:0])
			r.queueLocked(start, r.scratch)
			queued = len(r.scratch) > 0
		}
		n++
		// Only a queued alert fills the outbox (and its length takes its
		// lock): most events raise none.
		if queued && r.outbox.Len() >= r.cfg.MaxPending {
			r.mu.Unlock()
			err := r.flushPending(ctx)
			r.mu.Lock()
			if err != nil {
				return n, since, err
			}
		}
		if err := heads.advance(); err != nil {
			return n, since, err
		}
		if n%4096 == 0 {
			if r.metrics != nil {
				r.metrics.replayed.Add(float64(n - counted))
				counted = n
			}
			r.progress.replayed.Store(int64(n))
			r.progress.at.Store(ms)
			if r.replayed != nil {
				r.replayed(n)
			}
			if ctx.Err() != nil {
				return n, since, ctx.Err()
			}
		}
	}
}

// openPartitions opens the partitions of topic at once, each over its
// own connection; on an error it closes those it opened.
func openPartitions(ctx context.Context, kc kafkaio.Config, topic string, parts []int) ([]*kafkaio.PartitionReader, error) {
	prs := make([]*kafkaio.PartitionReader, len(parts))
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prs[i], errs[i] = kafkaio.OpenPartition(ctx, kc, topic, p)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, pr := range prs {
			if pr != nil {
				pr.Close()
			}
		}
		return nil, err
	}
	return prs, nil
}

// replayAhead is how many chunks of replayChunk events a partition's
// reader decodes ahead of the replay.
const replayAhead = 4

// replayChunk is the number of events a replay reader hands over at once.
const replayChunkSize = 256

// replayCursor is the head of one partition during the replay. A
// goroutine of its own (read) fetches and decodes the partition ahead,
// replayAhead chunks at most, so that the replay's goroutine only merges
// and evaluates: fetching and decoding cost it more than the whole rule
// pack did.
type replayCursor struct {
	partition int
	topic     string
	side      bool              // of the buyers' topic (see openFuelSide)
	chunks    chan *replayChunk // filled by read, closed at its end
	free      chan *replayChunk // chunks the replay is done with
	cur       *replayChunk
	i         int
	head      *replayedEvent // &cur.evs[i] while ok
	at        int64          // head.at, where the merge compares it without a miss
	ok        bool           // head holds the next event
	order     int            // place among the replay's cursors
	taken     uint64         // when the merge last took its head (mergeHeap)
}

func newReplayCursor(partition int, topic string, side bool) *replayCursor {
	return &replayCursor{partition: partition, topic: topic, side: side,
		chunks: make(chan *replayChunk, replayAhead), free: make(chan *replayChunk, replayAhead+2)}
}

// openFuelSide opens the partitions of the buyers' topic
// (kafkaio.TopicFuelEvents) for a replay whose fuel rules look back to
// cutoff (Unix ms), when the topic reaches back that far: its oldest
// record was written at least event.DefaultMaxFuture before cutoff (an
// event may be that far ahead of its receipt). Ingest writes every
// purchase there too, so from then on it holds all of them; before (a
// topic new, or written by no ingest yet) the events topic is read back
// for them as far as the fuel rules look, and nil is returned.
func (r *Role) openFuelSide(ctx context.Context, cutoff int64) ([]*kafkaio.PartitionReader, error) {
	parts, err := kafkaio.Partitions(ctx, r.kc, r.fuelTopic)
	if err != nil || len(parts) == 0 {
		r.log.Debug("buyers' topic not read; fuel purchases come from the events topic", "topic", r.fuelTopic, "err", err)
		return nil, nil
	}
	// Its oldest record first (one small fetch a partition, none for an
	// empty one): a topic that does not reach back is not opened.
	bounds, err := kafkaio.Bounds(ctx, r.kc.Client(), r.fuelTopic, true)
	if err != nil {
		return nil, err
	}
	oldest := int64(math.MaxInt64)
	for _, p := range parts {
		b, ok := bounds[p]
		if !ok {
			return nil, fmt.Errorf("cannot list the offsets of %s/%d", r.fuelTopic, p)
		}
		if b.First >= b.End {
			continue // empty
		}
		t, err := kafkaio.RecordTime(ctx, r.kc.Client(), r.fuelTopic, p, b.First)
		if err != nil {
			return nil, err
		}
		oldest = min(oldest, t.UnixMilli())
	}
	if oldest > cutoff-event.DefaultMaxFuture.Milliseconds() {
		return nil, nil
	}
	return openPartitions(ctx, r.kc, r.fuelTopic, parts)
}

// replayChunk is a run of a partition's events, or the error that ended
// its reading.
type replayChunk struct {
	evs []replayedEvent
	err error
}

// replayedEvent is one event of the replay with its record's times.
type replayedEvent struct {
	ev   event.Event
	at   int64     // ev.Time in Unix ns, the merge's order
	recv time.Time // the record time: when ingest received it
	pub  time.Time // when its raw message was published; zero: not known
}

// searchOnly is the committed offset replayCursor.read is given for a
// topic the group does not read (the buyers' topic): where it starts is
// found by time alone.
const searchOnly = math.MaxInt64

// read reads pr from the first record ingest received at or after since
// less event.DefaultMaxFuture (earlier where committed, the group's
// offset, is; from the start when the group has none, -1; searchOnly:
// since decides) to its end into c.chunks, and closes it. A record whose type
// (event.PeekType) no rule evaluates at its time, by byType (Unix ms), is
// passed over undecoded: an event is at most event.DefaultMaxFuture ahead
// of its record time, when ingest accepted it. It stops early, with
// nothing more sent, when ctx ends.
func (c *replayCursor) read(ctx context.Context, r *Role, pr *kafkaio.PartitionReader, since time.Time, committed int64, byType *[32]int64) {
	defer close(c.chunks)
	dec := event.Decoder{Now: r.now}
	send := func(ch *replayChunk) bool {
		select {
		case c.chunks <- ch:
			return true
		case <-ctx.Done():
			return false
		}
	}
	// Input the group never committed is processed whatever its age, as
	// a new group processes what is already there.
	from := pr.First
	if committed >= 0 {
		// The records ingest received before since less the furthest an
		// event may be ahead of its receipt hold no event at or after
		// since: the broker's time index finds where they end, in one
		// request (a binary search on event time took about 17 fetches).
		// The filter below reads past the same records by the same rule.
		at, err := pr.OffsetAt(since.Add(-event.DefaultMaxFuture))
		if err != nil {
			send(&replayChunk{err: fmt.Errorf("cannot find where %s/%d reaches back to %s: %w", c.topic, pr.Partition, since.Format(time.RFC3339), err)})
			return
		}
		from = max(min(at, committed), pr.First)
	}
	pr.Next = from
	for ctx.Err() == nil {
		var ch *replayChunk
		select {
		case ch = <-c.free:
			ch.evs = ch.evs[:0]
		default:
			ch = &replayChunk{evs: make([]replayedEvent, 0, replayChunkSize)}
		}
		end := false
		for len(ch.evs) < replayChunkSize {
			m, ok, err := pr.Read()
			if err != nil {
				ch.err = fmt.Errorf("cannot replay %s/%d: %w", c.topic, pr.Partition, err)
				send(ch)
				return
			}
			if !ok {
				end = true
				break
			}
			if t := event.PeekType(m.Value); t != event.TypeUnknown && m.Time.Add(event.DefaultMaxFuture).UnixMilli() < byType[t&31] {
				if r.metrics != nil {
					r.metrics.replaySkipped.Inc()
				}
				continue
			}
			// The chunk's slots are reused as they are: the decoder resets
			// the event (keeping its Attrs buffer), and m.Value, read for
			// this message alone, is handed over to it.
			ch.evs = ch.evs[:len(ch.evs)+1]
			e := &ch.evs[len(ch.evs)-1]
			if err := dec.DecodeNormalizedShared(m.Value, &e.ev); err != nil {
				ch.evs = ch.evs[:len(ch.evs)-1]
				if r.metrics != nil {
					r.metrics.undecodable.Inc()
				}
				continue
			}
			e.at = e.ev.Time.UnixNano()
			e.recv = m.Time
			e.pub, _ = kafkaio.Published(&m)
		}
		if len(ch.evs) > 0 && !send(ch) || end {
			return
		}
	}
}

// advance moves head to the partition's next event; ok is false after
// its last.
func (c *replayCursor) advance() error {
	if c.cur != nil {
		if c.i++; c.i < len(c.cur.evs) {
			c.head = &c.cur.evs[c.i]
			c.at = c.head.at
			return nil
		}
		// The engine keeps nothing of an event past its call.
		select {
		case c.free <- c.cur:
		default:
		}
		c.cur, c.head = nil, nil
	}
	ch, open := <-c.chunks
	if !open {
		c.ok = false
		return nil
	}
	if ch.err != nil {
		c.ok = false
		return ch.err
	}
	c.cur, c.i, c.head, c.ok = ch, 0, &ch.evs[0], true
	c.at = c.head.at
	return nil
}

// mergeHeap holds the replay's cursors that have a head, as a binary
// heap: the earliest head at the root, and among equal times the cursor
// taken least recently (then the one opened first).
type mergeHeap struct {
	cs    []*replayCursor
	taken uint64 // takes so far
}

// newMergeHeap returns the heap of those cursors that have a head.
func newMergeHeap(cursors []*replayCursor) *mergeHeap {
	h := &mergeHeap{}
	for i, c := range cursors {
		c.order = i
		if c.ok {
			h.cs = append(h.cs, c)
		}
	}
	for i := len(h.cs)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
	return h
}

func (h *mergeHeap) less(a, b *replayCursor) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	if a.taken != b.taken {
		return a.taken < b.taken
	}
	return a.order < b.order
}

// take returns the root, which the caller moves on with advance.
func (h *mergeHeap) take() *replayCursor {
	h.taken++
	c := h.cs[0]
	c.taken = h.taken
	return c
}

// advance moves the root cursor to its next event and restores the
// order; a cursor at its end leaves the heap.
func (h *mergeHeap) advance() error {
	c := h.cs[0]
	err := c.advance()
	if !c.ok {
		last := len(h.cs) - 1
		h.cs[0] = h.cs[last]
		h.cs[last] = nil
		h.cs = h.cs[:last]
	}
	if len(h.cs) > 0 {
		h.down(0)
	}
	return err
}

func (h *mergeHeap) down(i int) {
	n := len(h.cs)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h.less(h.cs[r], h.cs[l]) {
			m = r
		}
		if !h.less(h.cs[m], h.cs[i]) {
			return
		}
		h.cs[i], h.cs[m] = h.cs[m], h.cs[i]
		i = m
	}
}

// oldestUncommitted returns the earliest event time among the first
// messages the group has not committed (from the partition's first
// message where it has committed nothing, or less than that), or start
// when there is none earlier: the rules' horizons count back from there,
// so that input that waited for a stopped process, or a new group's whole
// input, is evaluated with what came before it.
func (r *Role) oldestUncommitted(prs []*kafkaio.PartitionReader, committed map[int]int64, start time.Time) (time.Time, error) {
	ref := start
	dec := event.Decoder{Now: r.now}
	var ev event.Event
	for _, pr := range prs {
		cp, ok := committed[pr.Partition]
		if !ok || cp < pr.First {
			cp = pr.First
		}
		if cp >= pr.End {
			continue
		}
		m, err := pr.At(cp)
		if err != nil {
			return start, fmt.Errorf("cannot read %s/%d at offset %d: %w", r.eventsTopic, pr.Partition, cp, err)
		}
		if dec.DecodeNormalized(m.Value, &ev) == nil && ev.Time.Before(ref) {
			ref = ev.Time
		}
	}
	return ref, nil
}

// committed returns the group's committed offsets on the events topic; a
// partition without one is absent or negative.
func (r *Role) committed(ctx context.Context, parts []int) (map[int]int64, error) {
	res, err := r.kc.Client().OffsetFetch(ctx, &kafka.OffsetFetchRequest{
		GroupID: r.cfg.Group,
		Topics:  map[string][]int{r.eventsTopic: parts},
	})
	if err != nil {
		return nil, fmt.Errorf("cannot fetch committed offsets of %s: %w", r.cfg.Group, err)
	}
	if errors.Is(res.Error, kafka.GroupIdNotFound) {
		return map[int]int64{}, nil // a new group: nothing committed
	}
	if res.Error != nil {
		return nil, fmt.Errorf("cannot fetch committed offsets of %s: %w", r.cfg.Group, res.Error)
	}
	out := map[int]int64{}
	for _, p := range res.Topics[r.eventsTopic] {
		if p.Error == nil {
			out[p.Partition] = p.CommittedOffset
		}
	}
	return out, nil
}
