package rtp

import (
	"fmt"
	"math"
	"time"
)

// minWindowPackets is the fewest packets a loss window must expect for
// its loss share to count: two lost packets of ten are noise, not a
// degraded stream.
const minWindowPackets = 20

// maxFragments bounds the packets of one document.
const maxFragments = 256

// Health statuses a stream reports (camera.health status values).
const (
	StatusOK        = "ok"
	StatusVideoLoss = "video_loss"
)

type fragment struct {
	seq    uint16
	off, n int32
}

// stream is the state of one SSRC: statistics, the document being
// reassembled, and health. It is guarded by its shard's mutex.
type stream struct {
	ssrc  uint32
	cam   *Camera
	stats Stats

	// Reassembly of the document with RTP timestamp docTS.
	docActive  bool
	docTS      uint32
	docStart   time.Time
	marker     bool
	markerSeq  uint16
	frags      []fragment
	data       []byte
	skip       bool   // the rest of an overflowed document is ignored
	skipTS     uint32 // … which has this timestamp
	prevMarker uint16 // sequence number of the last completed document's marker
	prevOK     bool
	lastDoneTS uint32
	doneOK     bool

	// Mapping of RTP time to wall time for documents without UtcTime.
	refTS      uint32
	refArrival time.Time

	// Health.
	created       time.Time
	lastArrival   time.Time
	window        Prior
	windowStart   time.Time
	lossBad       bool
	lossDetail    string
	degraded      bool
	lastHeartbeat time.Time
	metric        Prior // for the lost-packets counter
}

func newStream(ssrc uint32, cam *Camera, now time.Time) *stream {
	return &stream{ssrc: ssrc, cam: cam, created: now, windowStart: now, lastArrival: now}
}

// rtpUnits returns t in 90 kHz units, modulo 2³², from the Unix epoch.
func rtpUnits(t time.Time) uint32 {
	sec := uint64(t.Unix())
	ns := uint64(t.Nanosecond())
	return uint32(sec*ClockRate + ns*9/100_000)
}

// wallTime maps RTP timestamp ts to wall time through the arrival of the
// stream's first packet.
func (st *stream) wallTime(ts uint32) time.Time {
	d := int32(ts - st.refTS)
	return st.refArrival.Add(time.Duration(d) * time.Second / ClockRate)
}

// outcome of adding a fragment.
type fragOutcome uint8

const (
	fragPending    fragOutcome = iota
	fragComplete               // a document is ready
	fragOverflow               // the document outgrew the limit and was dropped
	fragIncomplete             // an earlier document was abandoned for a newer one
	fragLate                   // a packet of a finished or abandoned document
)

// addFragment adds a payload to the document being reassembled. When a
// document completes it is returned (valid until the next call); scratch
// is a buffer for reordering fragments. A fragOutcome other than
// fragPending and fragComplete is for counting; the document in progress,
// if any, goes on.
func (st *stream) addFragment(seq uint16, ts uint32, marker bool, payload []byte, now time.Time, limit int, scratch *[]byte) (fragOutcome, []byte) {
	if st.skip && ts == st.skipTS {
		return fragPending, nil
	}
	st.skip = false
	if st.doneOK && ts == st.lastDoneTS {
		return fragLate, nil // a resend or late duplicate of a finished document
	}
	var out fragOutcome
	if st.docActive && ts != st.docTS {
		if len(st.frags) > 0 && int16(seq-st.frags[0].seq) < 0 {
			return fragLate, nil // older than the document in progress
		}
		st.resetDoc()
		st.prevOK = false
		out = fragIncomplete
	}
	if !st.docActive {
		st.docActive, st.docTS, st.docStart = true, ts, now
	}
	for _, f := range st.frags {
		if f.seq == seq {
			return out, nil // duplicate fragment
		}
	}
	if len(st.data)+len(payload) > limit || len(st.frags) >= maxFragments {
		st.resetDoc()
		st.prevOK = false
		st.skip, st.skipTS = true, ts
		return fragOverflow, nil
	}
	st.frags = append(st.frags, fragment{seq: seq, off: int32(len(st.data)), n: int32(len(payload))})
	st.data = append(st.data, payload...)
	if marker {
		st.marker, st.markerSeq = true, seq
	}
	if !st.marker {
		return out, nil
	}
	doc, ok := st.assemble(scratch)
	if !ok {
		return out, nil
	}
	st.prevMarker, st.prevOK = st.markerSeq, true
	st.lastDoneTS, st.doneOK = st.docTS, true
	st.resetDoc()
	if out == fragIncomplete {
		// Both happened; the count of the abandoned one is lost, which
		// is rare enough (a late document completing at once) to accept.
		return fragComplete, doc
	}
	return fragComplete, doc
}

// assemble returns the document when the fragments run without a gap up
// to the marker (and, when the previous document's marker is known, start
// right after it).
func (st *stream) assemble(scratch *[]byte) ([]byte, bool) {
	n := len(st.frags)
	var seen [maxFragments / 64]uint64
	inOrder := true
	for i, f := range st.frags {
		back := st.markerSeq - f.seq
		if int(back) >= n {
			return nil, false // after the marker, or too far before it
		}
		if seen[back/64]&(1<<(back%64)) != 0 {
			return nil, false
		}
		seen[back/64] |= 1 << (back % 64)
		if int(back) != n-1-i {
			inOrder = false
		}
	}
	// Every distance 0 … n-1 is present (n distinct values below n).
	first := st.markerSeq - uint16(n-1)
	if st.prevOK && first != st.prevMarker+1 {
		return nil, false // the first packets are still missing
	}
	if inOrder {
		return st.data, true
	}
	buf := (*scratch)[:0]
	for want := first; ; want++ {
		for _, f := range st.frags {
			if f.seq == want {
				buf = append(buf, st.data[f.off:f.off+f.n]...)
				break
			}
		}
		if want == st.markerSeq {
			break
		}
	}
	*scratch = buf
	return buf, true
}

func (st *stream) resetDoc() {
	st.docActive, st.marker = false, false
	st.frags = st.frags[:0]
	st.data = st.data[:0]
	if cap(st.data) > 64<<10 {
		st.data = nil // do not keep a rare large document's buffer per stream
	}
}

// check is what the periodic loop learns about a stream at now.
type check struct {
	timedOut  bool    // an incomplete document was dropped
	health    string  // "", StatusOK or StatusVideoLoss: a transition
	detail    string  // why
	heartbeat bool    // the camera is due a device.heartbeat
	lost      int64   // packets lost since the previous check (≥ 0)
	jitter    float64 // seconds; -1 when the stream had no packets since the previous check
}

// check runs the time-driven logic of a stream at now: reassembly
// timeout, stall and loss-window health, heartbeat. It reads no clock.
func (st *stream) check(now time.Time, cfg *Config, lastCheck time.Time) check {
	var c check
	if st.docActive && now.Sub(st.docStart) >= cfg.ReassemblyTimeout {
		st.resetDoc()
		st.prevOK = false
		c.timedOut = true
	}
	if _, lost, _ := st.stats.Since(&st.metric); lost > 0 {
		c.lost = lost
	}
	c.jitter = -1
	if st.lastArrival.After(lastCheck) {
		c.jitter = st.stats.jitter / ClockRate
	}
	if now.Sub(st.windowStart) >= cfg.LossWindow {
		expected, lost, _ := st.stats.Since(&st.window)
		span := now.Sub(st.windowStart)
		st.windowStart = now
		if expected >= minWindowPackets {
			share := float64(max(lost, 0)) / float64(expected)
			st.lossBad = share > cfg.LossThreshold
			if st.lossBad {
				st.lossDetail = fmt.Sprintf("loss %.1f%% over %ds", share*100, int(math.Round(span.Seconds())))
			}
		}
	}
	stalled := now.Sub(st.lastArrival) >= cfg.StallTimeout
	switch bad := stalled || st.lossBad; {
	case bad && !st.degraded:
		st.degraded = true
		c.health = StatusVideoLoss
		if stalled {
			c.detail = fmt.Sprintf("stream stalled: no packets for %ds", int(now.Sub(st.lastArrival).Seconds()))
		} else {
			c.detail = st.lossDetail
		}
	case !bad && st.degraded:
		st.degraded = false
		c.health, c.detail = StatusOK, "stream healthy again"
	}
	if st.lastArrival.After(st.lastHeartbeat) && now.Sub(st.lastHeartbeat) >= cfg.HeartbeatInterval {
		st.lastHeartbeat = now
		c.heartbeat = true
	}
	return c
}
