package rtp

import (
	"fmt"
	"math"
	"math/bits"
	"time"
)

// minWindowPackets is the fewest packets a loss window must expect for
// its loss share to count: two lost packets of ten are noise, not a
// degraded stream.
const minWindowPackets = 20

// maxFragments bounds the packets of one document.
const maxFragments = 256

// reorderSlots is the reorder window in packets: a packet up to this many
// sequence numbers ahead of the next one due waits for the missing ones
// (a few documents of metadata, or a few fragments of a large one). A
// power of two, since a packet's slot is its sequence number modulo it.
const reorderSlots = 64

// maxHeldBytes is the most the held packets and the stash of one stream
// take, and so the largest heldData grows to.
const maxHeldBytes = (reorderSlots + 1) * datagramSize

// Health statuses a stream reports (camera.health status values).
const (
	StatusOK        = "ok"
	StatusVideoLoss = "video_loss"
)

// dropReason is why a document (or what was buffered of it) was
// abandoned; each maps to a reason of citywatch_rtp_documents_dropped_total.
type dropReason uint8

const (
	noDrop      dropReason = iota
	dropTimeout            // missing packets did not come in time (reassembly_timeout)
	dropWindow             // missing packets fell out of the reorder window, or no marker (incomplete)
	dropSize               // the document outgrew MaxDocumentBytes (reassembly_overflow)
	dropBudget             // abandoned to keep within MaxBufferBytes (memory_budget)
	dropResync             // the sender restarted its numbering (restart)
	// dropQuiet marks a document after packets whose drop was counted
	// already: if it lost its beginning with them, it is not counted again.
	dropQuiet
)

// heldPkt is a packet that arrived ahead of the next one due; its payload
// is heldData[off:off+n].
type heldPkt struct {
	at     int64 // arrival, Unix ns
	ts     uint32
	off, n int32
	marker bool
}

// packet is a packet on its way from the reorder buffer to reassembly;
// payload is valid only during the call it is passed to.
type packet struct {
	seq     uint16
	ts      uint32
	marker  bool
	payload []byte
	at      time.Time
}

// stream is the state of one SSRC: statistics, the reorder buffer, the
// document being reassembled, and health. It is guarded by its shard's
// mutex.
//
// Packets go through the reorder buffer, which hands them to reassembly
// in sequence order, so that reassembly only ever sees a gap where
// packets were given up as lost: a document is the packets after the
// previous marker up to the next, all with one timestamp.
type stream struct {
	ssrc  uint32
	cam   *Camera
	stats Stats
	clock rtpClock

	// Reorder buffer. Payloads of held packets (and of the stash) are in
	// heldData, which has dead space until it is compacted or empty.
	jbStarted bool
	next      uint16                 // sequence number of the next packet due
	held      *[reorderSlots]heldPkt // allocated at the stream's first early packet
	heldMask  uint64                 // bit seq%reorderSlots: that slot holds a packet
	heldLive  int                    // payload bytes of the held packets and the stash
	heldSince int64                  // arrival (Unix ns) of the longest-held packet
	heldData  []byte
	gap       dropReason // packets before the next one handed on were given up, and why

	// A packet far outside the sequence (RFC 3550 A.1 bad_seq), kept
	// until the next packet tells a restart of the sender from a stray.
	stash    heldPkt
	stashSeq uint16
	hasStash bool

	// Reassembly of the document with RTP timestamp docTS.
	docActive  bool
	docTS      uint32
	docStart   time.Time
	docPackets int
	docUnsure  dropReason // its first packets may be lost: counted as this if it does not parse
	data       []byte
	skip       bool   // packets of timestamp skipTS are dropped up to a marker
	skipTS     uint32 // (a document already counted as dropped)

	// reserved is what the stream's buffers take of the receiver's budget
	// (their capacity).
	reserved int64

	// Health; degraded and stalled are what was reported downstream.
	lastArrival   time.Time
	windowStart   time.Time
	lossBad       bool
	lossDetail    string
	fraction      uint8 // lost share of the last loss window (A.3 form)
	degraded      bool
	stalled       bool
	lastHeartbeat time.Time
	metric        Prior // for the lost-packets counter
}

func newStream(ssrc uint32, cam *Camera, now time.Time) *stream {
	return &stream{ssrc: ssrc, cam: cam, windowStart: now, lastArrival: now}
}

// rtpUnits returns t in 90 kHz units, modulo 2³², from the Unix epoch.
func rtpUnits(t time.Time) uint32 {
	sec := uint64(t.Unix())
	ns := uint64(t.Nanosecond())
	return uint32(sec*ClockRate + ns*9/100_000)
}

// Mapping of RTP time to wall time.
const (
	// anchorPeriod is how often the mapping moves to the least delayed
	// packet of the period, so that a sender clock running fast or slow
	// (100 ppm is 6 ms a minute) does not carry its error for hours.
	anchorPeriod = int64(time.Minute)
	// maxDrift is how far an arrival may be from the mapping before the
	// mapping starts again from it: a timestamp jump, not network delay.
	maxDrift = int64(time.Second)
)

// rtpClock maps a stream's RTP timestamps to wall time for documents
// without UtcTime. Timestamps are extended to 64 bits by unwrapping each
// against the previous one (as RTP stacks do), so the mapping holds past
// the 2³¹ ticks (6.6 h at 90 kHz) of a signed 32-bit difference.
type rtpClock struct {
	init    bool
	last    uint32 // the last timestamp observed
	lastExt int64  // … extended
	refExt  int64  // anchor: an extended timestamp …
	refNs   int64  // … and its arrival, Unix ns
	// The least delayed packet of the period that started at periodNs:
	// the next anchor.
	periodNs, bestExt, bestNs, bestOff int64
}

func ticksToNs(d int64) int64 { return d * 100_000 / 9 } // d * 1e9 / ClockRate

func (c *rtpClock) reset(ts uint32, ns int64) {
	*c = rtpClock{init: true, last: ts, refNs: ns, periodNs: ns, bestNs: ns}
}

// observe records a packet's timestamp and arrival (Unix ns).
func (c *rtpClock) observe(ts uint32, ns int64) {
	if !c.init {
		c.reset(ts, ns)
		return
	}
	ext := c.lastExt + int64(int32(ts-c.last))
	c.last, c.lastExt = ts, ext
	off := ns - c.refNs - ticksToNs(ext-c.refExt)
	if off > maxDrift || off < -maxDrift {
		c.refExt, c.refNs = ext, ns
		c.periodNs, c.bestExt, c.bestNs, c.bestOff = ns, ext, ns, 0
		return
	}
	if off < c.bestOff {
		c.bestExt, c.bestNs, c.bestOff = ext, ns, off
	}
	if ns-c.periodNs >= anchorPeriod {
		c.refExt, c.refNs = c.bestExt, c.bestNs
		c.periodNs, c.bestExt, c.bestNs, c.bestOff = ns, ext, ns, off-c.bestOff
	}
}

// wall maps timestamp ts, near the last one observed, to wall time.
func (c *rtpClock) wall(ts uint32) time.Time {
	ext := c.lastExt + int64(int32(ts-c.last))
	return time.Unix(0, c.refNs+ticksToNs(ext-c.refExt))
}

// push takes a packet that the statistics accepted (not a duplicate) and
// hands it, and the packets it lets go, to reassembly in sequence order.
// window is how long packets wait behind a gap.
func (st *stream) push(w *worker, p *packet, window time.Duration) {
	if !st.jbStarted {
		st.jbStarted, st.next = true, p.seq
	}
	switch d := p.seq - st.next; {
	case d == 0:
		st.assemble(w, p)
		st.next++
		st.drain(w)
	case d < reorderSlots:
		if !st.hold(w, p) {
			// No room to wait: what is held goes on without the missing
			// packets, and so does this one.
			st.skipTo(w, p, dropBudget)
		}
	case d >= 1<<15:
		// Behind the next one due: its place was given up, or handed on.
		w.c[cLate].Add(1)
	default:
		// Beyond the window: the missing packets are lost, not late.
		st.skipTo(w, p, dropWindow)
	}
	if st.heldMask != 0 {
		st.expire(w, p.at.UnixNano(), window)
	}
}

// skipTo gives up every gap up to p, for reason, and hands p on; held
// packets after p wait on.
func (st *stream) skipTo(w *worker, p *packet, reason dropReason) {
	for st.heldMask != 0 && int16(st.firstHeld()-p.seq) <= 0 {
		st.giveUp(w, reason)
	}
	if d := p.seq - st.next; d >= 1<<15 {
		w.c[cLate].Add(1) // it fell among the packets just handed on
		return
	} else if d != 0 {
		st.next, st.gap = p.seq, reason
	}
	st.assemble(w, p)
	st.next++
	st.drain(w)
}

// expire gives up the gaps that packets have waited behind for window.
func (st *stream) expire(w *worker, now int64, window time.Duration) {
	for st.heldMask != 0 && now-st.heldSince >= int64(window) {
		st.giveUp(w, dropTimeout)
	}
}

// hold keeps a packet that arrived ahead of the next one due; false when
// the buffer budget has no room for it.
func (st *stream) hold(w *worker, p *packet) bool {
	slot := p.seq % reorderSlots
	if st.heldMask&(1<<slot) != 0 {
		return true // a duplicate the statistics could not tell
	}
	off, ok := st.keep(w, p.payload)
	if !ok {
		return false
	}
	if st.held == nil {
		st.held = new([reorderSlots]heldPkt)
	}
	at := p.at.UnixNano()
	st.held[slot] = heldPkt{at: at, ts: p.ts, off: off, n: int32(len(p.payload)), marker: p.marker}
	if st.heldMask == 0 {
		st.heldSince = at
	}
	st.heldMask |= 1 << slot
	return true
}

// keep copies payload into heldData, compacting it or growing it within
// the budget, and returns its offset.
func (st *stream) keep(w *worker, payload []byte) (int32, bool) {
	n := len(payload)
	if len(st.heldData)+n > cap(st.heldData) && st.heldLive+n <= cap(st.heldData)/2 {
		st.compact()
	}
	buf, ok := w.grow(st, st.heldData, n, maxHeldBytes)
	if !ok {
		return 0, false
	}
	off := len(buf)
	st.heldData = append(buf, payload...)
	st.heldLive += n
	return int32(off), true
}

// compact moves the live payloads of heldData to its front, in the order
// they were stored, so that each moves down or stays.
func (st *stream) compact() {
	var live [reorderSlots + 1]*heldPkt
	k := 0
	for m := st.heldMask; m != 0; m &= m - 1 {
		live[k] = &st.held[bits.TrailingZeros64(m)]
		k++
	}
	if st.hasStash {
		live[k] = &st.stash
		k++
	}
	l := live[:k]
	for i := 1; i < len(l); i++ { // insertion sort by offset: at most 65
		for j := i; j > 0 && l[j].off < l[j-1].off; j-- {
			l[j], l[j-1] = l[j-1], l[j]
		}
	}
	end := int32(0)
	for _, h := range l {
		copy(st.heldData[end:], st.heldData[h.off:h.off+h.n])
		h.off = end
		end += h.n
	}
	st.heldData = st.heldData[:end]
}

// drain hands on the held packets that follow the next one due.
func (st *stream) drain(w *worker) {
	if st.heldMask == 0 {
		return
	}
	for {
		slot := st.next % reorderSlots
		if st.heldMask&(1<<slot) == 0 {
			break
		}
		h := st.held[slot]
		st.heldMask &^= 1 << slot
		st.heldLive -= int(h.n)
		st.assemble(w, &packet{seq: st.next, ts: h.ts, marker: h.marker,
			payload: st.heldData[h.off : h.off+h.n], at: time.Unix(0, h.at)})
		st.next++
	}
	if st.heldMask != 0 {
		st.heldSince = math.MaxInt64
		for m := st.heldMask; m != 0; m &= m - 1 {
			st.heldSince = min(st.heldSince, st.held[bits.TrailingZeros64(m)].at)
		}
	} else if !st.hasStash {
		st.heldData = w.release(st, st.heldData)
		st.heldLive = 0
	}
}

// giveUp takes the packets missing before the first held one as lost,
// for reason, and hands on what follows.
func (st *stream) giveUp(w *worker, reason dropReason) {
	if st.heldMask == 0 {
		return
	}
	st.next = st.firstHeld()
	st.gap = reason
	st.drain(w)
}

// firstHeld returns the sequence number of the first held packet; the
// buffer must hold one.
func (st *stream) firstHeld() uint16 {
	return st.next + uint16(bits.TrailingZeros64(bits.RotateLeft64(st.heldMask, -int(st.next%reorderSlots))))
}

// flushHeld hands on every held packet, the missing ones taken as lost.
func (st *stream) flushHeld(w *worker, reason dropReason) {
	for st.heldMask != 0 {
		st.giveUp(w, reason)
	}
}

// assemble takes the next packet in sequence order (after st.gap, when
// packets before it were given up) and completes documents.
func (st *stream) assemble(w *worker, p *packet) {
	limit := w.r.cfg.MaxDocumentBytes
	var unsure dropReason
	if gap := st.gap; gap != noDrop {
		st.gap = noDrop
		if st.docActive {
			// Lost were its last packets, or (same timestamp) ones in
			// the middle: either way it cannot be read.
			if p.ts == st.docTS {
				st.skip, st.skipTS = true, p.ts
			}
			st.abandon(w, gap)
		}
		if st.skip && p.ts != st.skipTS {
			st.skip = false // the skipped document's marker was lost too
		}
		// The lost packets may have begun the document this one is in.
		unsure = gap
	}
	if st.skip {
		if p.ts == st.skipTS {
			st.skip = !p.marker
			return
		}
		st.skip = false // its sender set no marker
	}
	if st.docActive && p.ts != st.docTS {
		st.abandon(w, dropWindow) // a new timestamp before the marker
	}
	if !st.docActive {
		if p.marker && len(p.payload) <= limit {
			// A one-packet document: read in place, not copied.
			w.document(st, p.payload, p.ts, unsure)
			return
		}
		st.docActive, st.docTS, st.docStart, st.docPackets, st.docUnsure = true, p.ts, p.at, 0, unsure
	}
	if len(st.data)+len(p.payload) > limit || st.docPackets >= maxFragments {
		st.abandon(w, dropSize)
		st.skip, st.skipTS = !p.marker, p.ts
		return
	}
	buf, ok := w.grow(st, st.data, len(p.payload), limit)
	if !ok {
		st.abandon(w, dropBudget)
		st.skip, st.skipTS = !p.marker, p.ts
		return
	}
	st.data = append(buf, p.payload...)
	st.docPackets++
	if !p.marker {
		return
	}
	w.document(st, st.data, st.docTS, st.docUnsure)
	st.endDoc(w)
}

// abandon drops the document in progress, counted for reason.
func (st *stream) abandon(w *worker, reason dropReason) {
	if !st.docActive {
		return
	}
	w.drop(reason)
	st.endDoc(w)
}

func (st *stream) endDoc(w *worker) {
	st.docActive, st.docPackets = false, 0
	st.data = w.release(st, st.data)
}

// dropBuffers abandons everything the stream buffers (the document in
// progress, held packets, the stash), each document counted once for
// reason. The rest of the abandoned document is skipped, and the reorder
// buffer goes on after the dropped packets.
func (st *stream) dropBuffers(w *worker, reason dropReason) {
	counted, ts := st.docActive, st.docTS
	if st.docActive {
		st.skip, st.skipTS = true, st.docTS
		st.abandon(w, reason)
	}
	if st.heldMask != 0 {
		last := 63 - bits.LeadingZeros64(bits.RotateLeft64(st.heldMask, -int(st.next%reorderSlots)))
		st.dropHeld(w, reason, counted, ts)
		st.next += uint16(last) + 1
		st.gap = dropQuiet
	}
	if st.hasStash {
		st.dropStash(w)
	}
	st.heldData = w.release(st, st.heldData)
	st.heldLive = 0
}

// dropHeld drops the held packets, counting one document for reason per
// timestamp among them, except the timestamp ts when counted (the
// document in progress, counted already).
func (st *stream) dropHeld(w *worker, reason dropReason, counted bool, ts uint32) {
	for i := range uint16(reorderSlots) {
		slot := (st.next + i) % reorderSlots
		if st.heldMask&(1<<slot) == 0 {
			continue
		}
		if h := &st.held[slot]; !counted || h.ts != ts {
			w.drop(reason)
			ts, counted = h.ts, true
		}
		st.heldLive -= int(st.held[slot].n)
	}
	st.heldMask = 0
}

// bufferedSince returns since when the stream has buffered what it holds
// (Unix ns), and false when it holds nothing.
func (st *stream) bufferedSince() (int64, bool) {
	if st.reserved == 0 {
		return 0, false
	}
	since := int64(math.MaxInt64)
	if st.docActive {
		since = st.docStart.UnixNano()
	}
	if st.heldMask != 0 {
		since = min(since, st.heldSince)
	}
	if st.hasStash {
		since = min(since, st.stash.at)
	}
	return since, true
}

// stashPacket keeps a packet far outside the sequence until the next
// packet tells whether the sender restarted; an earlier one is dropped.
func (st *stream) stashPacket(w *worker, p *packet) {
	if st.hasStash {
		st.dropStash(w)
	}
	off, ok := st.keep(w, p.payload)
	if !ok {
		w.c[cStray].Add(1)
		return
	}
	st.stash = heldPkt{at: p.at.UnixNano(), ts: p.ts, off: off, n: int32(len(p.payload)), marker: p.marker}
	st.stashSeq, st.hasStash = p.seq, true
}

// dropStash drops the stashed packet: the sender did not restart.
func (st *stream) dropStash(w *worker) {
	w.c[cStray].Add(1)
	st.hasStash = false
	st.heldLive -= int(st.stash.n)
	if st.heldMask == 0 {
		st.heldData = w.release(st, st.heldData)
		st.heldLive = 0
	}
}

// restart starts the stream's reassembly and time mapping again for the
// sender's new numbering, which p confirmed (A.1). Packets held behind a
// gap of the old numbering go on without it; the stashed packet before
// p, the first of the new numbering, goes first.
func (st *stream) restart(w *worker, p *packet, window time.Duration) {
	st.flushHeld(w, dropResync)
	st.abandon(w, dropResync)
	st.jbStarted, st.skip, st.gap = false, false, noDrop
	if !st.hasStash || st.stashSeq != p.seq-1 {
		if st.hasStash {
			st.dropStash(w)
		}
		st.clock.reset(p.ts, p.at.UnixNano())
		return
	}
	// Its payload stays in heldData until it has been handed on.
	s := st.stash
	st.hasStash = false
	st.heldLive -= int(s.n)
	st.clock.reset(s.ts, s.at)
	st.push(w, &packet{seq: st.stashSeq, ts: s.ts, marker: s.marker,
		payload: st.heldData[s.off : s.off+s.n], at: time.Unix(0, s.at)}, window)
	if st.heldMask == 0 {
		st.heldData = w.release(st, st.heldData)
		st.heldLive = 0
	}
}

// check is what the periodic loop learns about a stream at now.
type check struct {
	health    string  // "", StatusOK or StatusVideoLoss: a transition to report
	detail    string  // why
	heartbeat bool    // the camera is due a device.heartbeat
	lost      int64   // packets lost since the previous check (≥ 0)
	jitter    float64 // seconds; -1 when the stream had no packets since the previous check
}

// check runs the time-driven logic of a stream at now: packets waiting
// behind a gap, reassembly timeout, stall and loss-window health,
// heartbeat. It reads no clock. A health transition is reported, not
// made: the caller commits it once the event was taken, so that one the
// output could not take is reported again at the next check.
func (st *stream) check(w *worker, now time.Time, cfg *Config, lastCheck time.Time) check {
	var c check
	if st.heldMask != 0 {
		st.expire(w, now.UnixNano(), cfg.ReorderWait)
	}
	if st.hasStash && now.UnixNano()-st.stash.at >= int64(cfg.ReassemblyTimeout) {
		st.dropStash(w)
	}
	if st.docActive && now.Sub(st.docStart) >= cfg.ReassemblyTimeout {
		st.skip, st.skipTS = true, st.docTS // its late packets are not a new document
		st.abandon(w, dropTimeout)
	}
	if _, lost, _ := st.stats.Since(&st.metric); lost > 0 {
		c.lost = lost
	}
	c.jitter = -1
	if st.lastArrival.After(lastCheck) {
		c.jitter = st.stats.jitter / ClockRate
	}
	if now.Sub(st.windowStart) >= cfg.LossWindow {
		expected, lost, fraction := st.stats.Interval()
		span := now.Sub(st.windowStart)
		st.windowStart, st.fraction = now, fraction
		if expected >= minWindowPackets {
			share := float64(max(lost, 0)) / float64(expected)
			st.lossBad = share > cfg.LossThreshold
			if st.lossBad {
				st.lossDetail = fmt.Sprintf("loss %.1f%% over %ds", share*100, int(math.Round(span.Seconds())))
			}
		}
	}
	stalled := now.Sub(st.lastArrival) >= cfg.StallTimeout
	if st.degraded {
		st.stalled = stalled
	}
	switch bad := stalled || st.lossBad; {
	case bad && !st.degraded:
		c.health = StatusVideoLoss
		if stalled {
			c.detail = fmt.Sprintf("stream stalled: no packets for %ds", int(now.Sub(st.lastArrival).Seconds()))
		} else {
			c.detail = st.lossDetail
		}
	case !bad && st.degraded:
		c.health, c.detail = StatusOK, "stream healthy again"
	}
	if st.lastArrival.After(st.lastHeartbeat) && now.Sub(st.lastHeartbeat) >= cfg.HeartbeatInterval {
		st.lastHeartbeat = now
		c.heartbeat = true
	}
	return c
}

// setHealth commits a reported health transition.
func (st *stream) setHealth(status string, now time.Time, cfg *Config) {
	st.degraded = status == StatusVideoLoss
	st.stalled = st.degraded && now.Sub(st.lastArrival) >= cfg.StallTimeout
}
