package rules

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/kafkaio"
)

// TopicByKey is the repartition topic of a scaled-out rules role
// (RoleConfig.Shards), without the prefix: one partition per shard of the
// rules' keys (Shards), carrying every event a shard's keys need, in the
// order the forwarder read them, and the forwarders' watermarks.
const TopicByKey = "internal.rules.bykey"

// ByKeyGroupSuffix is appended to RoleConfig.Group to name the consumer
// group of the repartition topic: its members own the shards.
const ByKeyGroupSuffix = "-bykey"

// Headers of the repartition topic's records. A forwarded event carries
// its input partition's watermark after it and the input record it came
// from; a marker (no value) carries the watermark of every input
// partition its forwarder holds. Integers are big-endian.
const (
	headerWatermark = "citywatch-wm"   // Unix ms, 8 bytes
	headerSource    = "citywatch-src"  // partition (4 bytes), offset (8 bytes)
	headerSources   = "citywatch-srcs" // per partition: partition (4 bytes), watermark (8 bytes; 0: no event yet)
)

// markEvery is how far the watermark moves before a forwarder tells a
// shard that got no event of it, when its input is idle; under load it
// tells every tickEvery (the timers' resolution).
const markEvery = tickEvery / 10

// runSharded is Run in scale-out mode. Every process does two jobs, each
// in a consumer group of its own:
//
//   - It forwards (forward): as a member of RoleConfig.Group it reads its
//     partitions of the events topic, runs a clock per partition on them
//     (lateness, stall holds, the wall clock while idle; see forwarder),
//     and writes every event that is in time to the shards of the
//     repartition topic (TopicByKey) that its keys belong to, stamped with
//     its partition's watermark and its input position. It commits the
//     input once those writes are acknowledged.
//   - It evaluates (runGeneration): as a member of RoleConfig.Group with
//     ByKeyGroupSuffix it owns the shards it is assigned, each with an
//     engine of its own, whose watermark is the least of the input
//     partitions' and whose state is rebuilt, at every rebalance, by
//     replaying the shard's records of the rules' horizon.
//
// The role refuses to start when the topic exists with another partition
// count than Shards: a key's shard is its hash modulo that count.
func (r *Role) runSharded(ctx context.Context) error {
	if err := kafkaio.EnsureTopic(ctx, r.kc, TopicByKey, r.cfg.Shards); err != nil {
		return fmt.Errorf("cannot create the rules' repartition topic: %w", err)
	}
	parts, err := kafkaio.Partitions(ctx, r.kc, r.byKeyTopic)
	if err != nil {
		return err
	}
	if len(parts) != r.cfg.Shards {
		return fmt.Errorf("rules.shards: %d, but topic %s has %d partitions; a topic's keys cannot be moved, so create a new one (another topic prefix) or set rules.shards to %d", r.cfg.Shards, r.byKeyTopic, len(parts), len(parts))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	go func() { errs <- r.forward(ctx) }()
	go func() {
		errs <- kafkaio.Share(ctx, r.kc, r.cfg.Group+ByKeyGroupSuffix, TopicByKey, r.cfg.Shards, r.log, r.runGeneration)
	}()
	first := <-errs
	cancel()
	return errors.Join(first, <-errs)
}

// forward runs the forwarding half of a scaled-out role until ctx ends
// (see runSharded).
func (r *Role) forward(ctx context.Context) error {
	// Forwarded events are waited for as alerts are: small writes go at
	// once (kafkaio.PromptWriter).
	w := r.kc.NewPromptWriter(r.kmet, r.log)
	w.SetBalancer(kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return m.Partition }))
	defer func() {
		if err := w.Close(); err != nil {
			r.log.Warn("cannot close the forwarder's writer", "err", err)
		}
	}()
	r.mu.Lock()
	r.eng.forwarding = true // it holds the rule set; the clocks are per partition
	r.mu.Unlock()
	// The stall watch's first answer tells whether ingest still drains a
	// backlog.
	r.awaitFirstPoll(ctx)
	return kafkaio.Member(ctx, r.kc, r.cfg.Group, r.eventsTopic, r.log, func(gctx context.Context, gen *kafka.Generation, owned []kafka.PartitionAssignment) error {
		return r.forwardGeneration(ctx, gctx, gen, owned, w)
	})
}

// forwarder is the state of one generation of forwarding.
//
// Each input partition has a clock of its own (an Engine that evaluates
// nothing): the newest event time of the partition, moved on by the wall
// clock while the partition is idle and held by the stall watch, less the
// lateness. An event older than its partition's watermark is late. The
// shards take the least of the partitions' watermarks, so a partition
// that lags, catches up or changes hands holds the timers back rather
// than making its events late, and what is judged late depends on the
// partition's own order alone, not on how the partitions interleave
// (one process's catch-up hold, catchUp, takes that least too).
type forwarder struct {
	r      *Role
	gen    *kafka.Generation
	out    *kafkaio.Outbox
	w      kafkaio.Writer
	topic  string
	clocks map[int]*Engine // by owned input partition
	// waiting holds, for an owned partition whose clock has no event
	// yet while input waits, the end offset of that input (see resume).
	waiting map[int]int64
	marked  []int64 // by shard: the least watermark of its last marker; -1: none yet
	least   int64   // the least of marked
	// done is, by input partition, the offset after the last message
	// forwarded; committed what the group holds.
	done, committed map[int]int64
	lastCommit      time.Time
	announced       time.Time // when every shard last heard of every partition
	late            uint64    // late events counted into r.eng's stats
	dec             event.Decoder
	ev              event.Event
	targets         []int
}

// commitEvery is the least time between two commits of the forwarders'
// input: a commit is a round trip, and a crash forwards again at most
// that much (the shards drop what they had).
const commitEvery = 100 * time.Millisecond

// forwardGeneration forwards the partitions owned until gctx ends.
// Stopping order: the partition readers stop; what was read is forwarded
// and committed (the generation holds its rebalance until then).
func (r *Role) forwardGeneration(ctx, gctx context.Context, gen *kafka.Generation, owned []kafka.PartitionAssignment, w kafkaio.Writer) error {
	fw := &forwarder{
		r:         r,
		gen:       gen,
		out:       kafkaio.NewOutbox("forwarded events", r.byKeyTopic, r.kmet),
		w:         w,
		topic:     r.byKeyTopic,
		clocks:    map[int]*Engine{},
		waiting:   map[int]int64{},
		marked:    make([]int64, r.cfg.Shards),
		least:     -1,
		done:      map[int]int64{},
		committed: map[int]int64{},
		dec:       event.Decoder{Now: r.now},
	}
	fw.remark() // every shard hears of the partitions at once
	rs := r.ruleSet()
	for _, pa := range owned {
		eng, err := New(r.ecfg, rs, r.metrics)
		if err != nil {
			return err
		}
		eng.forwarding = true
		fw.clocks[pa.ID] = eng
		fw.committed[pa.ID] = pa.Offset
		if err := fw.resume(gctx, eng, pa); err != nil {
			if gctx.Err() != nil {
				return nil
			}
			r.log.Warn("cannot read where the rules' input stopped; its clock starts afresh", "partition", pa.ID, "err", err)
		}
	}
	r.mu.Lock()
	r.forwardClocks = fw.clocks
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.forwardClocks = nil
		r.mu.Unlock()
	}()
	r.log.Info("rules input assigned", "generation", gen.ID, "partitions", len(owned))
	if err := fw.flush(ctx, true, false); errors.Is(err, errCrashed) {
		return err
	}

	rctx, stopReaders := context.WithCancel(gctx)
	msgs := make(chan kafka.Message, r.kc.QueueCapacity)
	var readers sync.WaitGroup
	defer func() {
		stopReaders()
		readers.Wait()
	}()
	for _, pa := range owned {
		readers.Add(1)
		go func() {
			defer readers.Done()
			kafkaio.Follow(rctx, r.kc, r.eventsTopic, pa.ID, pa.Offset, r.log, func(m *kafka.Message) {
				select {
				case msgs <- *m:
				case <-rctx.Done():
				}
			})
		}()
	}
	tick := time.NewTicker(r.tickEvery)
	defer tick.Stop()
	var err error
loop:
	for {
		in := msgs
		if fw.out.Len() >= r.cfg.MaxPending {
			in = nil // writes are failing: input waits, retried at the tick
		}
		select {
		case m := <-in:
			fw.add(&m)
			if idle := len(msgs) == 0; idle || fw.out.Len() >= r.cfg.MaxPending {
				err = fw.flush(ctx, idle, false)
			}
		case <-tick.C:
			fw.advance(r.now())
			err = fw.flush(ctx, true, false)
		case <-gctx.Done():
			break loop
		}
		if errors.Is(err, errCrashed) {
			return err
		} else if err != nil && gctx.Err() == nil {
			r.log.Warn("cannot forward events; retrying", "err", err)
		}
	}
	stopReaders()
	readers.Wait()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := fw.flush(sctx, false, true); err != nil {
		if errors.Is(err, errCrashed) {
			return err
		}
		// The next owner forwards again what was not committed.
		r.log.Warn("cannot forward and commit at the end of a generation; the next owner forwards it again", "err", err)
	}
	return nil
}

// resume sets the clock of a partition taken over where its last owner
// left it: at the event before the group's position, so that what was
// late before the handover is late after it.
//
// A partition without such an event whose input waits is marked waiting:
// until its clock has an event (or its input at the start is read) it
// holds the shards' watermark, for its events may be older than every
// other partition's.
func (fw *forwarder) resume(ctx context.Context, eng *Engine, pa kafka.PartitionAssignment) error {
	pr, err := kafkaio.OpenPartition(ctx, fw.r.kc, fw.r.eventsTopic, pa.ID)
	if err != nil {
		fw.waiting[pa.ID] = math.MaxInt64 // until its first event
		return err
	}
	defer pr.Close()
	if pa.Offset <= pr.First || pa.Offset > pr.End {
		if max(pa.Offset, pr.First) < pr.End {
			fw.waiting[pa.ID] = pr.End
		}
		return nil
	}
	m, err := pr.At(pa.Offset - 1)
	if err != nil {
		return err
	}
	var ev event.Event
	if err := fw.dec.DecodeNormalized(m.Value, &ev); err != nil {
		return nil // skipped when it was read; the next event sets the clock
	}
	eng.setClock(clockTime(ev.Time, m.Time).UnixMilli(), fw.r.now())
	return nil
}

// clockOf returns what a marker says of partition p's clock: its
// watermark; 1 (hold) while it waits for its first event; 0 (no event,
// none waiting: no hold).
func (fw *forwarder) clockOf(p int, eng *Engine) int64 {
	switch {
	case eng.maxEvent != 0:
		return eng.wm
	case fw.waiting[p] != 0:
		return holdAll
	}
	return 0
}

// add forwards m to the shards its event needs (Engine.route) when its
// partition's clock finds it in time.
func (fw *forwarder) add(m *kafka.Message) {
	r := fw.r
	if err := fw.dec.DecodeNormalizedShared(m.Value, &fw.ev); err != nil {
		r.skipUndecodable(m, err)
		fw.done[m.Partition] = m.Offset + 1
		return
	}
	eng := fw.clocks[m.Partition]
	if eng == nil {
		return // not this generation's: cannot happen
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.readLocked(m.Partition, m.Offset)
	fw.done[m.Partition] = m.Offset + 1
	if end := fw.waiting[m.Partition]; end != 0 && m.Offset+1 >= end {
		delete(fw.waiting, m.Partition) // read up to where it stood at the start
		fw.remark()
	}
	r.catchUp.observe(m.Partition, clockTime(fw.ev.Time, m.Time).UnixMilli(), now) // for the stall watch (delivered)
	if ms := r.stallHold.Load(); ms != 0 {
		eng.Hold(time.UnixMilli(ms))
	} else {
		eng.Hold(time.Time{})
	}
	eng.now = now
	eng.installPending()
	first := eng.maxEvent == 0
	if !eng.observe(now, &fw.ev, m.Time) {
		return
	}
	if first && fw.waiting[m.Partition] != 0 {
		delete(fw.waiting, m.Partition)
		fw.remark()
	}
	eng.stats.Events++
	fw.targets = eng.route(&fw.ev, len(fw.marked), fw.targets[:0])
	if len(fw.targets) > 0 {
		wm := binary.BigEndian.AppendUint64(make([]byte, 0, 8+12), uint64(eng.wm))
		src := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(wm[8:], uint32(m.Partition)), uint64(m.Offset))
		for _, s := range fw.targets {
			fw.out.Add(kafka.Message{
				Topic:     fw.topic,
				Partition: s,
				Key:       m.Key,
				Value:     m.Value, // never written again (kafkaio.Follow)
				Time:      now,
				Headers:   []kafka.Header{{Key: headerWatermark, Value: wm[:8]}, {Key: headerSource, Value: src}},
			})
		}
	}
	// A marker is due only when the least clock moved a tick, which this
	// one, at or above it, must have done too: most events skip the scan
	// of every clock.
	if fw.least < 0 || eng.wm-fw.least >= tickEvery {
		fw.markLocked(now, false)
	}
}

// advance moves the partitions' clocks on with the wall clock (see
// Role.advance) and counts their late events into the role's.
func (fw *forwarder) advance(now time.Time) {
	r := fw.r
	r.mu.Lock()
	defer r.mu.Unlock()
	var late uint64
	for _, eng := range fw.clocks {
		var hold time.Time
		if ms := r.stallHold.Load(); ms != 0 {
			hold = time.UnixMilli(ms)
		}
		if r.upstreamBehind.Load() && eng.maxEvent != 0 {
			// The clock may not carry the watermark past what has
			// arrived while ingest still has input to deliver.
			hold = earlier(hold, time.UnixMilli(eng.maxEvent))
		}
		eng.Hold(hold)
		eng.Advance(now, nil)
		late += eng.stats.Late
	}
	r.eng.stats.Late += late - fw.late
	fw.late = late
	r.reportLateLocked(now)
	if now.Sub(fw.announced) >= announceEvery || now.Before(fw.announced) {
		fw.remark()
		fw.announced = now
	}
}

// announceEvery is how often a forwarder tells every shard of all its
// partitions, moving or not: a shard that starts replaying mid-stream
// holds its watermark until it has heard of every input partition, and a
// forwarder whose partitions carry no events has nothing else to say.
const announceEvery = 30 * time.Second

// lowLocked returns the least watermark of the partitions' clocks that
// have one, or 0 when none has.
func (fw *forwarder) lowLocked() int64 {
	low := int64(0)
	for _, eng := range fw.clocks {
		if eng.maxEvent != 0 && (low == 0 || eng.wm < low) {
			low = eng.wm
		}
	}
	return low
}

// remark has the next marker go to every shard: a partition's clock
// changed in a way the shards must hear of at once.
func (fw *forwarder) remark() {
	fw.least = -1
	for s := range fw.marked {
		fw.marked[s] = -1
	}
}

// markLocked writes a marker to every shard whose last one is a tick
// (idle: markEvery) of watermark behind, so that shards no event reaches
// move on. A marker lists, for every partition the forwarder holds, its
// watermark (0: it has seen no event yet). r.mu is held.
func (fw *forwarder) markLocked(now time.Time, idle bool) {
	step := tickEvery
	if idle {
		step = markEvery
	}
	low := fw.lowLocked()
	if fw.least >= 0 && low-fw.least < step {
		return
	}
	var srcs []byte
	least := int64(math.MaxInt64)
	for s, at := range fw.marked {
		if at < 0 || low-at >= step {
			if srcs == nil {
				srcs = make([]byte, 0, 12*len(fw.clocks))
				for p, eng := range fw.clocks {
					srcs = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(srcs, uint32(p)), uint64(fw.clockOf(p, eng)))
				}
			}
			fw.out.Add(kafka.Message{
				Topic:     fw.topic,
				Partition: s,
				Time:      now,
				Headers:   []kafka.Header{{Key: headerSources, Value: srcs}},
			})
			fw.marked[s], at = low, low
		}
		least = min(least, at)
	}
	fw.least = least
}

// flush writes what was forwarded, asks the crash hook (failure tests),
// and commits the input forwarded, at most every commitEvery unless
// final.
func (fw *forwarder) flush(ctx context.Context, idle, final bool) error {
	r := fw.r
	if idle {
		r.mu.Lock()
		fw.markLocked(r.now(), true)
		r.mu.Unlock()
	}
	if err := fw.out.Flush(ctx, fw.w); err != nil {
		return err
	}
	if r.crashHook != nil {
		if err := r.crashHook(); err != nil {
			return fmt.Errorf("%w: %w", errCrashed, err)
		}
	}
	now := r.now()
	if !final && now.Sub(fw.lastCommit) < commitEvery && !now.Before(fw.lastCommit) {
		return nil
	}
	offsets := map[int]int64{}
	for p, off := range fw.done {
		if off > fw.committed[p] {
			offsets[p] = off
		}
	}
	if len(offsets) == 0 {
		return nil
	}
	if err := fw.gen.CommitOffsets(map[string]map[int]int64{r.eventsTopic: offsets}); err != nil {
		return fmt.Errorf("cannot commit the rules' input: %w", err)
	}
	for p, off := range offsets {
		fw.committed[p] = off
	}
	fw.lastCommit = now
	return nil
}

// shardRun is one owned shard of a generation: its engine, fed by its
// goroutine (run) from the shard's partition of the repartition topic.
type shardRun struct {
	r     *Role
	shard int
	eng   *Engine
	check *replayCheck
	start time.Time
	// from and end bound the replay: the records forwarded since the
	// horizon, up to the end of the partition at the generation's start.
	from, end int64
	replaying bool
	restored  func()
	kick      func()
	// wms is, by input partition, the watermark its forwarder stamped
	// last (unheard: none yet; holdAll: it waits for its first event; 0:
	// no event and none waiting); next, the offset after the last event
	// forwarded from it, below which records are copies.
	wms  []int64
	next []int64
	dec  event.Decoder
	ev   event.Event
	out  []event.Alert
	n    int
	// sizes is what the engine's state holds, by rule, for the
	// generation's metrics; guarded by r.mu.
	sizes   map[string]stateSize
	sizesAt time.Time
	lag     prometheus.Gauge
}

// stateSize is the size of one rule's state in one engine.
type stateSize struct{ keys, bytes, open int }

// runGeneration runs one generation of the shards' group with the shards
// owned, until gctx ends: the alerts of those shards are read back, each
// shard's engine replays the shard's records of the rules' horizon (the
// alerts already written dropped as a start drops them, see Role), then
// follows the shard live. Stopping order: the shards' readers stop; the
// alerts still queued are written; then it returns and the group may
// rebalance, so that the next owner of a shard reads back every alert
// this process raised for it.
func (r *Role) runGeneration(gctx context.Context, generation int32, owned []int) error {
	// Writes outlive the generation: one cancelled half-way may have
	// landed, and written again it would be a duplicate (see write).
	ctx := context.WithoutCancel(gctx)
	gctx, cancel := context.WithCancel(gctx)
	defer cancel()
	defer r.endGeneration(ctx)
	r.log.Info("rules shards assigned", "generation", generation, "shards", len(owned), "of", r.cfg.Shards)
	if r.metrics != nil {
		r.metrics.shards.Set(float64(len(owned)))
	}
	if len(owned) == 0 {
		r.progress.restoring.Store(false)
		r.markRestored()
		if r.assigned != nil {
			r.assigned(owned)
		}
		<-gctx.Done()
		return nil
	}
	start := r.now()
	p := &r.progress
	p.begin(start)
	rs := r.ruleSet()
	horizon := r.horizon(rs)
	check, err := r.readAlerts(gctx, start.Add(-r.cfg.AlertsLookback))
	if err != nil {
		if gctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("cannot restore rules state: %w", err)
	}
	check.until = start.Add(horizon).UnixMilli()
	open := check.open()
	inputs, err := kafkaio.Partitions(gctx, r.kc, r.eventsTopic)
	if err != nil {
		if gctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("cannot restore rules state: %w", err)
	}

	kicks := make(chan struct{}, 1)
	kick := func() {
		select {
		case kicks <- struct{}{}:
		default:
		}
	}
	var restoring sync.WaitGroup
	shards := make([]*shardRun, len(owned))
	engines := make([]*Engine, len(owned))
	seeded := 0
	for i, s := range owned {
		eng, err := New(r.ecfg, rs, r.metrics)
		if err != nil {
			return err
		}
		eng.SetShards(NewShards(r.cfg.Shards, []int{s}))
		eng.driven = true
		for _, k := range open {
			if eng.ownsAlert(&k.latest) && eng.seed(&k.latest) {
				seeded++
			}
		}
		_, earliest := eng.replayFrom(start, r.cfg.Replay, replayMargin)
		pr, err := kafkaio.OpenPartition(gctx, r.kc, r.byKeyTopic, s)
		if err != nil {
			if gctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("cannot restore rules state: %w", err)
		}
		// A record is forwarded after its event was received, and an
		// event is at most event.DefaultMaxFuture ahead of its receipt.
		from, err := pr.OffsetAt(time.UnixMilli(earliest).Add(-event.DefaultMaxFuture))
		end := pr.End
		pr.Close()
		if err != nil {
			if gctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("cannot restore rules state: %w", err)
		}
		restoring.Add(1)
		sh := &shardRun{
			r: r, shard: s, eng: eng, check: check, start: start,
			from: from, end: end, replaying: true,
			restored: restoring.Done, kick: kick,
			dec:   event.Decoder{Now: r.now},
			sizes: map[string]stateSize{},
		}
		for _, p := range inputs {
			sh.stampSource(p, unheard)
		}
		if r.metrics != nil {
			sh.lag = r.metrics.inputLag.WithLabelValues(strconv.Itoa(s))
		}
		shards[i], engines[i] = sh, eng
	}
	r.mu.Lock()
	r.shardEngines = engines
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.shardEngines = nil
		r.mu.Unlock()
	}()

	var wg sync.WaitGroup
	for _, sh := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sh.run(gctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		restoring.Wait()
		if gctx.Err() != nil {
			return
		}
		n := 0
		for _, sh := range shards {
			n += sh.n
		}
		p.restoring.Store(false)
		r.log.Info("rules state restored", "shards", len(owned), "alerts_read", check.read, "open_alerts", seeded,
			"replayed_events", n, "lost_alerts_found", r.outbox.Len(), "took", r.now().Sub(start).String())
		r.markRestored()
		if r.assigned != nil {
			r.assigned(owned)
		}
		kick()
	}()

	// The writer: alerts are written as soon as a shard queues them.
	tick := time.NewTicker(r.tickEvery)
	defer tick.Stop()
	var werr error
loop:
	for {
		select {
		case <-kicks:
		case <-tick.C:
			r.publishShardSizes(shards)
		case <-gctx.Done():
			break loop
		}
		if werr = r.write(ctx); errors.Is(werr, errCrashed) {
			cancel()
			break loop
		} else if werr != nil && gctx.Err() == nil {
			r.log.Warn("cannot write alerts; retrying", "err", werr)
		}
	}
	wg.Wait()
	if errors.Is(werr, errCrashed) {
		return werr
	}
	return nil
}

// run replays the shard, then follows it, until ctx ends.
func (sh *shardRun) run(ctx context.Context) {
	defer func() {
		if sh.replaying {
			sh.restored()
		}
	}()
	if sh.from >= sh.end {
		sh.endReplay()
	}
	kafkaio.Follow(ctx, sh.r.kc, sh.r.byKeyTopic, sh.shard, sh.from, sh.r.log, func(m *kafka.Message) {
		if sh.lag != nil {
			sh.lag.Set(float64(m.HighWaterMark - m.Offset - 1))
			sh.r.metrics.shardRecords.Inc()
		}
		sh.add(m)
		if sh.replaying && m.Offset+1 >= sh.end {
			sh.endReplay()
		}
		// Alerts wait to be written while MaxPending are queued: input
		// waits behind them, as in one process.
		for sh.r.outbox.Len() >= sh.r.cfg.MaxPending && ctx.Err() == nil {
			sh.kick()
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// endReplay ends the shard's replay: rules look at every event from now
// on, and absence rules adopt the open alerts the replay did not renew.
func (sh *shardRun) endReplay() {
	sh.eng.endReplay()
	sh.eng.now = sh.start
	sh.eng.adoptSeeded()
	sh.replaying = false
	sh.restored()
}

// add evaluates one record of the shard: a marker moves the watermark, an
// event is evaluated at it; a copy of an event the shard had (forwarded
// again after a forwarder's crash) is dropped.
func (sh *shardRun) add(m *kafka.Message) {
	r := sh.r
	var wm int64 = -1
	var src, srcs []byte
	for _, h := range m.Headers {
		switch h.Key {
		case headerWatermark:
			if len(h.Value) == 8 {
				wm = int64(binary.BigEndian.Uint64(h.Value))
			}
		case headerSource:
			src = h.Value
		case headerSources:
			srcs = h.Value
		}
	}
	marker := m.Value == nil
	if marker && (len(srcs) == 0 || len(srcs)%12 != 0) || !marker && (wm < 0 || len(src) != 12) {
		if r.metrics != nil {
			r.metrics.undecodable.Inc()
		}
		r.log.Error("cannot read a forwarded record's headers; skipped", "topic", r.byKeyTopic, "partition", m.Partition, "offset", m.Offset)
		return
	}
	if marker {
		for i := 0; i < len(srcs); i += 12 {
			sh.stampSource(int(binary.BigEndian.Uint32(srcs[i:])), int64(binary.BigEndian.Uint64(srcs[i+4:])))
		}
	} else {
		p, off := int(binary.BigEndian.Uint32(src)), int64(binary.BigEndian.Uint64(src[4:]))
		if p < len(sh.next) && off < sh.next[p] {
			return // forwarded again after a crash
		}
		sh.stampSource(p, wm)
		sh.next[p] = off + 1
	}
	// The least watermark among the input partitions; none while one has
	// not been heard of (its forwarder announces it on taking it over).
	least := int64(math.MaxInt64)
	for _, w := range sh.wms {
		if w == unheard || w == holdAll {
			least = -1
			break
		}
		if w > 0 {
			least = min(least, w)
		}
	}
	if least == math.MaxInt64 {
		least = -1
	}
	clock := r.now()
	now := clock
	if sh.replaying {
		now = sh.start // replayed input counts as arrived at the start
	}
	if marker {
		sh.out = sh.eng.AdvanceStamped(now, least, sh.out[:0])
	} else {
		if err := sh.dec.DecodeNormalizedShared(m.Value, &sh.ev); err != nil {
			if r.metrics != nil {
				r.metrics.undecodable.Inc()
			}
			r.log.Error("cannot decode forwarded event; skipped", "partition", m.Partition, "offset", m.Offset, "err", err)
			return
		}
		sh.out = sh.eng.ProcessStamped(now, &sh.ev, least, sh.out[:0])
		if sh.replaying {
			sh.n++
			if sh.n%4096 == 0 {
				r.progress.replayed.Add(4096)
				r.progress.at.Store(sh.ev.Time.UnixMilli())
				if r.metrics != nil {
					r.metrics.replayed.Add(4096)
				}
			}
		}
	}
	sizesDue := clock.After(sh.sizesAt.Add(r.tickEvery))
	if len(sh.out) == 0 && !sizesDue {
		return
	}
	r.mu.Lock()
	if len(sh.out) > 0 {
		r.queueCheckedLocked(&sh.check, sh.eng, now, sh.out)
	}
	if sizesDue {
		sh.eng.sizesInto(sh.sizes)
		sh.sizesAt = clock
	}
	r.mu.Unlock()
	if len(sh.out) > 0 {
		sh.kick()
	}
}

// unheard marks an input partition no forwarder has stamped yet; holdAll
// one whose forwarder waits for its first event. Either holds the shards'
// watermark where it is.
const (
	unheard = -2
	holdAll = 1
)

// stampSource records that input partition p's clock stood at wm (0: no
// event yet).
func (sh *shardRun) stampSource(p int, wm int64) {
	for p >= len(sh.wms) {
		sh.wms = append(sh.wms, unheard)
		sh.next = append(sh.next, 0)
	}
	sh.wms[p] = wm
}

// publishShardSizes sets the state metrics to the sum over the shards.
func (r *Role) publishShardSizes(shards []*shardRun) {
	if r.metrics == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	total := map[string]stateSize{}
	for _, sh := range shards {
		for id, s := range sh.sizes {
			t := total[id]
			t.keys, t.bytes, t.open = t.keys+s.keys, t.bytes+s.bytes, t.open+s.open
			total[id] = t
		}
	}
	for id, t := range total {
		m := r.metrics.forRule(id)
		m.keys.Set(float64(t.keys))
		m.bytes.Set(float64(t.bytes))
		m.open.Set(float64(t.open))
	}
}

// endGeneration writes what the generation's engines queued, so that the
// next owner of its shards reads it back, and empties the queue: a
// message that cannot be written in time is left for the next owner to
// raise again (its restore finds it missing).
func (r *Role) endGeneration(ctx context.Context) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.write(sctx); err != nil {
		n := r.outbox.Drop()
		r.log.Warn("cannot write alerts at the end of a generation; the next owner raises them", "alerts", n, "err", err)
	}
}

// errCrashed wraps the crash hook's error in a scaled-out role.
var errCrashed = errors.New("crashed before writing")

// write writes the queued alerts, after asking the crash hook (failure
// tests): a crash there loses them, as a process killed before its write
// would, for the next owner of the shards to raise again. The end of a
// generation does not cancel a write: one cancelled half-way may have
// landed, and written again it would be a duplicate; only ctx (the
// role's) and the write timeout do.
func (r *Role) write(ctx context.Context) error {
	if r.crashHook != nil {
		if err := r.crashHook(); err != nil {
			return fmt.Errorf("%w: %w", errCrashed, err)
		}
	}
	return r.flushPending(ctx)
}

// ruleSet returns the rule set to build a generation's engines with: the
// newest one loaded.
func (r *Role) ruleSet() *RuleSet {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.eng.installPending()
	return r.eng.RuleSet()
}

// open returns the alerts the topic shows open, oldest first, so that a
// situation table seeded with them stays ordered by time.
func (c *replayCheck) open() []*knownAlert {
	open := make([]*knownAlert, 0, len(c.known))
	for _, k := range c.known {
		if !k.resolved && !k.shadow {
			open = append(open, k)
		}
	}
	slices.SortFunc(open, func(a, b *knownAlert) int { return cmp.Compare(a.last, b.last) })
	return open
}
