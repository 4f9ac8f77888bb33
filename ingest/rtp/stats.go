package rtp

// RFC 3550 appendix A.1 constants.
const (
	seqMod        = 1 << 16
	maxDropout    = 3000
	maxMisorder   = 100
	minSequential = 2
	// ClockRate is the RTP clock of ONVIF metadata (vnd.onvif.metadata).
	ClockRate = 90_000
)

// Stats is the RFC 3550 reception state of one stream (appendix A.1 for
// sequence numbers, A.3 for loss, A.8 for jitter), plus counts of
// duplicates and reordered packets, which the appendix leaves to the
// receiver. A new source is on probation until minSequential packets in
// sequence have arrived; packets during probation are not counted, as in
// A.1. The zero value is a stream that has seen nothing.
type Stats struct {
	started   bool
	probation int
	maxSeq    uint16
	cycles    uint32 // shifted count of sequence number cycles
	baseSeq   uint32
	badSeq    uint32
	received  uint32 // packets accepted, duplicates included (A.3)
	prior     Prior  // for Interval

	// Jitter (A.8) in timestamp units, and the last transit time.
	jitter     float64
	transit    int32
	hasTransit bool

	// Duplicates are packets whose extended sequence number was seen
	// before (within the last 64); Reordered are packets that arrived
	// after a higher sequence number but were not duplicates. Restarts
	// counts re-synchronisations after a jump (A.1, bad_seq).
	Duplicates uint64
	Reordered  uint64
	Restarts   uint64

	// seen is a bit per extended sequence number maxExt-63 … maxExt.
	seen uint64
}

// Update records a packet with sequence number seq, RTP timestamp ts,
// arriving at arrival (in the same 90 kHz units as ts, from any fixed
// origin). It returns whether the packet is valid for the stream (A.1
// update_seq: not during probation, nor far outside the expected sequence
// until the source has re-synchronised) and whether it is a duplicate of
// one already counted. Jitter is updated by valid packets that are not
// duplicates.
func (s *Stats) Update(seq uint16, ts uint32, arrival uint32) (valid, duplicate bool) {
	if !s.started {
		s.started = true
		s.initSeq(seq)
		s.maxSeq = seq - 1
		s.probation = minSequential
	}
	ok, dup := s.updateSeq(seq)
	if !ok || dup {
		return ok, dup
	}
	// A.8: transit = arrival - timestamp, d = |transit - last transit|,
	// J += (|d| - J) / 16.
	transit := int32(arrival - ts)
	if s.hasTransit {
		d := transit - s.transit
		if d < 0 {
			d = -d
		}
		s.jitter += (float64(d) - s.jitter) / 16
	}
	s.transit, s.hasTransit = transit, true
	return true, false
}

// onProbation reports whether the source has not yet sent minSequential
// packets in sequence (A.1).
func (s *Stats) onProbation() bool { return s.probation > 0 }

func (s *Stats) initSeq(seq uint16) {
	s.baseSeq = uint32(seq)
	s.maxSeq = seq
	s.badSeq = seqMod + 1 // so seq == badSeq is false
	s.cycles = 0
	s.received = 0
	s.seen = 1
}

// updateSeq is A.1's update_seq, extended to tell duplicates from
// reordered packets.
func (s *Stats) updateSeq(seq uint16) (ok, dup bool) {
	udelta := seq - s.maxSeq
	if s.probation > 0 {
		// Packets are accepted only once minSequential are in sequence.
		if seq == s.maxSeq+1 {
			s.probation--
			s.maxSeq = seq
			if s.probation == 0 {
				s.initSeq(seq)
				s.received++
				return true, false
			}
		} else {
			s.probation = minSequential - 1
			s.maxSeq = seq
		}
		return false, false
	}
	switch {
	case udelta < maxDropout:
		// In order, with a permissible gap.
		if seq < s.maxSeq {
			s.cycles += seqMod // wrapped
		}
		if udelta >= 64 {
			s.seen = 1
		} else {
			s.seen = s.seen<<udelta | 1
		}
		if udelta == 0 {
			// The same number as the highest: a duplicate of it.
			s.Duplicates++
			s.received++
			return true, true
		}
		s.maxSeq = seq
	case uint32(udelta) <= seqMod-maxMisorder:
		// A very large jump: the sender restarted (or a stray packet).
		// Two in sequence make the new numbering valid.
		if uint32(seq) == s.badSeq {
			s.initSeq(seq)
			s.Restarts++
			// The new numbering comes with new timestamps: the jump
			// between the old transit and the new is not jitter. The
			// estimate itself is the network's and carries on.
			s.hasTransit = false
		} else {
			s.badSeq = (uint32(seq) + 1) & (seqMod - 1)
			return false, false
		}
	default:
		// Behind the highest by up to maxMisorder: duplicate or reordered.
		back := uint16(-int16(udelta)) // how far behind maxSeq
		if back < 64 && s.seen&(1<<back) != 0 {
			s.Duplicates++
			s.received++
			return true, true
		}
		if back < 64 {
			s.seen |= 1 << back
		}
		s.Reordered++
	}
	s.received++
	return true, false
}

// Report is a snapshot of a stream's RFC 3550 figures.
type Report struct {
	// ExtendedMax is the highest extended sequence number (A.3).
	ExtendedMax uint32
	// Expected is ExtendedMax - base + 1; Received counts accepted
	// packets, duplicates included, so that Lost (Expected - Received)
	// may be negative, as in A.3.
	Expected uint32
	Received uint32
	Lost     int64
	// Jitter is the interarrival jitter estimate in timestamp units.
	Jitter float64
}

// JitterMs returns the jitter in milliseconds at the 90 kHz clock.
func (r Report) JitterMs() float64 { return r.Jitter * 1000 / ClockRate }

// Report returns the cumulative figures; all zero before the stream has
// passed probation.
func (s *Stats) Report() Report {
	if !s.started || s.probation > 0 {
		return Report{}
	}
	ext := s.cycles + uint32(s.maxSeq)
	expected := ext - s.baseSeq + 1
	return Report{
		ExtendedMax: ext,
		Expected:    expected,
		Received:    s.received,
		Lost:        int64(expected) - int64(s.received),
		Jitter:      s.jitter,
	}
}

// Prior is where an interval of A.3 starts: the expected and received
// counts at its start. Callers that need intervals of their own (a loss
// window beside the statistics interval) keep one each.
type Prior struct {
	expected, received uint32
	restarts           uint64
}

// Interval returns the packets expected and lost since the previous call
// and the fraction lost in RFC 3550 form (A.3: lost_interval * 256 /
// expected_interval, 0 when nothing was lost or expected), then starts a
// new interval.
func (s *Stats) Interval() (expected uint32, lost int64, fraction uint8) {
	return s.Since(&s.prior)
}

// Since is Interval against the caller's prior p, which it advances. A
// restart of the source's numbering (A.1 init_seq) starts p afresh, as
// init_seq clears expected_prior and received_prior.
func (s *Stats) Since(p *Prior) (expected uint32, lost int64, fraction uint8) {
	if p.restarts != s.Restarts {
		*p = Prior{restarts: s.Restarts}
	}
	r := s.Report()
	expected = r.Expected - p.expected
	p.expected = r.Expected
	received := r.Received - p.received
	p.received = r.Received
	lost = int64(expected) - int64(received)
	if expected == 0 || lost <= 0 {
		return expected, lost, 0
	}
	return expected, lost, uint8(min((lost<<8)/int64(expected), 255))
}
