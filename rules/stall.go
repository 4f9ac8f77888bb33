package rules

import (
	"cmp"
	"context"
	"time"

	"github.com/segmentio/kafka-go"

	"citywatch/internal/kafkaio"
)

// stallWatch finds input that exists but that the rules cannot see yet,
// so that it does not come late when it arrives.
//
// A consumer group member that dies without leaving keeps its partitions
// until its session times out (kafka.session_timeout, 30 s by default),
// while the other members go on with theirs. When that member was one of
// several ingest processes, the events of its raw partitions reach the
// rules half a minute after those of every other partition, which carried
// the watermark on meanwhile: with 5 s of lateness they all came late and
// raised nothing. The same holds for the rules' own group when a restarted
// process shares it for a while with its dead predecessor.
//
// So every tick the watch reads, from the brokers, where the upstream
// group (ingest) and the role's own group stand. A partition is stalled
// when it has messages its group has not committed and its committed
// offset has not moved since the previous poll (and, in the role's own
// group, the role has delivered nothing of it meanwhile: those are its own
// partitions). The record time of the first message a stalled partition
// holds back (when its producer, a device or ingest, wrote it) is the
// hold: the watermark may not pass it, by events of other partitions or by
// the clock, so that the events behind it are judged late by their own
// delay and not by the stall. A stall is found within two polls, well
// inside the allowed lateness, so the watermark cannot have run far ahead.
// A partition that moves again after a stall goes on holding, at its
// first waiting message, until that message is within caughtUp of now or
// nothing waits: ingest drains its backlog partition by partition, and the
// partitions it drains first would otherwise carry event time past those
// it drains last (one planted incident in 64 of a 200-kill crash loop was
// lost that way).
//
// An upstream partition seen for the first time (at the start) that
// has messages waiting is taken as one that moves again after a stall:
// a process restarted while ingest drains a backlog holds for it too.
//
// When such a partition is drained (nothing waits, or what waits is about
// now), ingest has written its backlog to the events topic, but the role
// may not have read it yet: a restarted process may still be joining its
// group, which waits for its dead predecessor's session to time out. Its
// hold stays until the role has evaluated the events topic up to the end
// offsets read at the drain (stallRole.reached). Released at the drain,
// the backlog came behind newer events of the same events partitions with
// no hold left, and was late (a planted purchase in about one crash loop
// in three under the whole test suite's load).
//
// A hold is never further back than maxHold from now: a partition that
// stays stalled (a group nobody consumes any more) then delays the timers
// by maxHold at most, and its events, when they come, are late beyond it.
// A false stall (a quiet partition whose one new message is not committed
// yet) holds at that message's time, about now, which costs nothing.
type stallWatch struct {
	client  *kafka.Client
	sources []stallSource
	maxHold time.Duration
	// out is the topic the role reads, which ingest writes to.
	out string

	prevPoll time.Time
	last     map[stallPart]int64      // committed offset at the previous poll
	stamps   map[stallPart]stallStamp // record time at a stalled offset
	catching map[stallPart]bool       // stalled, and not caught up since
	drains   map[stallPart]stallDrain // drained upstream, not read by the role yet
}

// stallRole is what the stall watch asks of the role it holds for.
type stallRole interface {
	// delivered reports whether the role delivered a message of
	// partition p of its input since a time.
	delivered(p int, since time.Time) bool
	// reached reports whether the role has evaluated its input up to
	// ends, the end offsets of its partitions.
	reached(ends map[int]int64) bool
}

// stallDrain is an upstream partition that was drained after a stall:
// its events are in the role's input, up to ends at the latest.
type stallDrain struct {
	hold time.Time     // the partition's hold when it was drained
	at   time.Time     // when it was drained
	ends map[int]int64 // the input's end offsets then; nil: not read yet
}

// caughtUp is how close to now the first waiting message of a partition
// that moves again after a stall must be for the partition to be live.
const caughtUp = 2 * time.Second

// stallSource is a consumer group whose input the rules wait for.
type stallSource struct {
	group  string
	topics []string
	// own is the role's own group: partitions the role delivered since
	// the previous poll are its own, not stalled.
	own bool
}

type stallPart struct {
	group     string
	topic     string
	partition int
}

type stallStamp struct {
	offset int64
	t      time.Time
}

// stallReport is the answer of one poll.
type stallReport struct {
	upstreamLag int64     // messages the upstream group has not committed
	stalled     int       // stalled partitions
	hold        time.Time // the time the watermark may not pass; zero: none
}

// newStallWatch returns a watch of sources for a role that reads out.
func newStallWatch(client *kafka.Client, maxHold time.Duration, out string, sources ...stallSource) *stallWatch {
	return &stallWatch{client: client, sources: sources, maxHold: maxHold, out: out,
		last: map[stallPart]int64{}, stamps: map[stallPart]stallStamp{}, catching: map[stallPart]bool{},
		drains: map[stallPart]stallDrain{}}
}

// release forgets that partition k held the watermark.
func (w *stallWatch) release(k stallPart) {
	delete(w.stamps, k)
	delete(w.catching, k)
}

// poll reads the groups' positions at now, for role. When a group's
// positions cannot be read, ok is false and the caller keeps its previous
// answer: the brokers are then likely out of reach for the input too. A
// record time or end offsets that cannot be read leave their partition
// out of the hold, or keep a drained one holding; err then says why.
func (w *stallWatch) poll(ctx context.Context, now time.Time, role stallRole) (rep stallReport, ok bool, err error) {
	positions := make([]map[string]map[int]kafkaio.Position, len(w.sources))
	for i, src := range w.sources {
		pos, err := kafkaio.Positions(ctx, w.client, src.group, src.topics)
		if err != nil {
			return rep, false, err
		}
		positions[i] = pos
	}
	seen := make(map[stallPart]bool, len(w.last))
	for i, src := range w.sources {
		var lag int64 // of this source
		for topic, ps := range positions[i] {
			for p, x := range ps {
				k := stallPart{src.group, topic, p}
				seen[k] = true
				lag += x.Lag()
				prev, known := w.last[k]
				w.last[k] = x.Committed
				moving := known && prev != x.Committed
				// An upstream partition seen for the first time may be
				// amid a backlog that a restarted ingest drains (and the
				// rules restarted meanwhile): it is looked at as one that
				// moves again after a stall.
				first := !known && !src.own
				held := w.stamps[k] // the hold of the previous poll, if catching
				if x.Lag() == 0 {
					w.drained(k, held, now, src.own)
					continue
				}
				if !known && src.own || moving && !w.catching[k] || src.own && role.delivered(p, w.prevPoll) {
					w.release(k)
					continue
				}
				st, ok := w.stamps[k]
				if !ok || st.offset != x.Committed {
					t, terr := kafkaio.RecordTime(ctx, w.client, topic, p, x.Committed)
					if terr != nil {
						err = cmp.Or(err, terr)
						continue
					}
					st = stallStamp{x.Committed, t}
					w.stamps[k] = st
				}
				if (moving || first) && !st.t.Before(now.Add(-caughtUp)) {
					// Its backlog is drained: what waits is about now.
					w.drained(k, held, now, src.own)
					continue
				}
				w.catching[k] = true
				rep.stalled++
				rep.hold = earlier(rep.hold, st.t)
			}
		}
		if !src.own {
			rep.upstreamLag += lag
		}
	}
	for k := range w.last {
		if !seen[k] {
			delete(w.last, k)
			w.release(k)
		}
	}
	var ends map[int]int64 // read once per poll, after the positions
	read := false
	for k, d := range w.drains {
		if d.ends == nil {
			if !read {
				var eerr error
				ends, eerr = kafkaio.EndOffsets(ctx, w.client, w.out)
				err, read = cmp.Or(err, eerr), true
			}
			if len(ends) > 0 {
				d.ends = ends
				w.drains[k] = d
			}
		}
		// A drain the role has not read within maxHold is not waited
		// for longer than a stall is.
		if d.ends != nil && role.reached(d.ends) || now.Sub(d.at) > w.maxHold {
			delete(w.drains, k)
			continue
		}
		rep.stalled++
		rep.hold = earlier(rep.hold, d.hold)
	}
	w.prevPoll = now
	if floor := now.Add(-w.maxHold); !rep.hold.IsZero() && rep.hold.Before(floor) {
		rep.hold = floor
	}
	return rep, true, err
}

// drained releases partition k, whose backlog is drained at now; held is
// its stamp until then. An upstream partition that held the watermark
// goes on holding there until the role has read what was drained (see
// stallWatch).
func (w *stallWatch) drained(k stallPart, held stallStamp, now time.Time, own bool) {
	if w.catching[k] && !own && !held.t.IsZero() {
		d, ok := w.drains[k]
		if !ok || held.t.Before(d.hold) {
			d.hold = held.t
		}
		w.drains[k] = stallDrain{hold: d.hold, at: now}
	}
	w.release(k)
}
