package rules

import "time"

// catchUp tracks, for each input partition, the newest event time it has
// delivered and when, so that the role can take the watermark as the
// minimum over its partitions rather than the maximum over all events.
//
// A consumer that fell behind (a slow moment, a long write, a restart)
// receives its backlog fetch by fetch, partition after partition: minutes
// of one partition's events can come before the first of the next. With
// one watermark (the newest event time seen minus the allowed lateness)
// the later partitions' events would be late and raise nothing. So the
// watermark is held at the smallest newest event time among the
// partitions: an event is late only if it is late within its own
// partition.
//
// A partition that has delivered nothing for stale of wall-clock time no
// longer holds the watermark (Flink calls such an input idle): a quiet
// partition, or one a rebalance took away, must not stop the timers that
// detect silence. The restart seeds every partition with the newest event
// it replayed, so that a partition whose backlog comes after another's is
// held for from the first message on.
//
// After a restart the consumer delivers nothing until the group has given
// it its partitions, which waits for the killed process's member to time
// out (kafka.session_timeout, 30 s by default) and for the rebalance. The
// seeded partitions are not idle meanwhile, only not yet delivering: wait
// keeps them held until the first message comes (resume) or until a bound
// past which the input must be silent indeed. Without it the watermark
// moved on with the clock during the join, and the events that arrived
// meanwhile came late and raised nothing: with the defaults, one SIGKILL
// and restart made some 25 s of the city's events late.
type catchUp struct {
	stale time.Duration
	parts []partitionClock // by partition number
	until time.Time        // while before it and not resumed: every seeded partition holds
}

type partitionClock struct {
	newest int64     // newest event time delivered, Unix ms; 0: none yet
	seen   time.Time // wall clock of the last message delivered
}

// observe records a message of partition p with event time t (Unix ms)
// that arrived at now.
func (c *catchUp) observe(p int, t int64, now time.Time) {
	if p < 0 {
		return
	}
	if p >= len(c.parts) {
		c.parts = append(c.parts, make([]partitionClock, p+1-len(c.parts))...)
	}
	pc := &c.parts[p]
	pc.newest = max(pc.newest, t)
	pc.seen = now
}

// wait holds every partition seen so far, delivering or not, until the
// consumer delivers (resume) or until until.
func (c *catchUp) wait(until time.Time) { c.until = until }

// resume ends a wait at now, the consumer's first delivery: each held
// partition has stale from now to deliver its backlog.
func (c *catchUp) resume(now time.Time) {
	if c.until.IsZero() {
		return
	}
	c.until = time.Time{}
	for i := range c.parts {
		c.parts[i].seen = now
	}
}

// hold returns the event time the watermark may not pass: the smallest
// newest event time among the partitions that delivered within stale (or
// all of them during a wait), or the zero time when none did.
func (c *catchUp) hold(now time.Time) time.Time {
	var h int64
	waiting := now.Before(c.until)
	for i := range c.parts {
		pc := &c.parts[i]
		if pc.newest == 0 || !waiting && now.Sub(pc.seen) > c.stale {
			continue
		}
		if h == 0 || pc.newest < h {
			h = pc.newest
		}
	}
	if h == 0 {
		return time.Time{}
	}
	return time.UnixMilli(h)
}
