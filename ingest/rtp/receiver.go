package rtp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pionrtp "github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"

	"citywatch/event"
)

// Emit takes one event the receiver produced. It must not block: it
// returns false when the event could not be queued (and counts that drop
// itself). The event and its strings are reused after Emit returns.
type Emit func(e *event.Event) bool

const (
	numShards = 256
	// batch and datagramSize size the receive buffers of one socket:
	// datagrams read per system call, and the largest datagram (metadata
	// packets stay below the path MTU; larger ones are counted as
	// malformed).
	batch        = 64
	datagramSize = 2048
	// coalesce is how long a reader waits after a read that found few
	// datagrams.
	coalesce = 250 * time.Microsecond
)

type shard struct {
	mu      sync.Mutex
	streams map[uint32]*stream
	// gone holds the SSRCs of streams evicted while reported as
	// video_loss, so that their return is reported as ok. It is bounded
	// by the registry's cameras, the only SSRCs that make streams.
	gone map[uint32]struct{}
	_    [32]byte // keep shards' mutexes on separate cache lines
}

// Receiver receives the RTP metadata streams of the city's cameras.
type Receiver struct {
	cfg  Config
	reg  *Registry
	emit Emit
	log  *slog.Logger
	// now is the clock of the packet and check loops.
	now func() time.Time

	shards   [numShards]shard
	nStreams atomic.Int64
	degraded atomic.Int64
	// bufBytes is the capacity of the reassembly and reorder buffers of
	// all streams, kept within cfg.MaxBufferBytes.
	bufBytes atomic.Int64

	mu      sync.Mutex
	conns   []*net.UDPConn
	workers []*worker // the checker's, then one per socket
	readers []*worker // one per socket, while Run runs
	checker *worker

	jitter prometheus.Histogram
}

// New returns a receiver of the cameras in reg that hands its events to
// emit and registers its metrics with prom.
func New(cfg Config, reg *Registry, emit Emit, prom prometheus.Registerer, log *slog.Logger) (*Receiver, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Receiver{cfg: cfg, reg: reg, emit: emit, log: log.With("component", "rtp"), now: time.Now}
	for i := range r.shards {
		r.shards[i].streams = make(map[uint32]*stream)
	}
	r.checker = r.newWorker()
	r.jitter = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "citywatch_rtp_jitter_seconds",
		Help:    "RFC 3550 interarrival jitter of the live streams, observed per stream at every check.",
		Buckets: []float64{0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1},
	})
	if err := prom.Register(r.jitter); err != nil {
		return nil, fmt.Errorf("cannot register RTP metrics: %w", err)
	}
	if err := prom.Register(&collector{r: r}); err != nil {
		return nil, fmt.Errorf("cannot register RTP metrics: %w", err)
	}
	return r, nil
}

// Listen opens the sockets, once; Run calls it if the caller did not.
// Tests call it first to learn the port (LocalAddr).
func (r *Receiver) Listen(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns != nil {
		return nil
	}
	n := r.cfg.Sockets
	if n == 0 {
		n = runtime.NumCPU()
	}
	if !reusePort {
		n = 1
	}
	addr := r.cfg.Addr
	for i := range n {
		c, err := listenUDP(ctx, addr, r.cfg.ReadBuffer)
		if err != nil {
			for _, c := range r.conns {
				c.Close()
			}
			r.conns = nil
			return fmt.Errorf("cannot listen on udp %s: %w", addr, err)
		}
		if i == 0 {
			addr = c.LocalAddr().String() // a port 0 becomes the port the others share
		}
		r.conns = append(r.conns, c)
	}
	return nil
}

// LocalAddr returns the address the sockets are bound to, or nil before
// Listen.
func (r *Receiver) LocalAddr() net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.conns) == 0 {
		return nil
	}
	return r.conns[0].LocalAddr()
}

// Run receives until ctx is done. Stop order: the sockets are closed
// first (no more intake), then the read loops and the check loop are
// waited for; what they emitted is already queued with the gateway.
func (r *Receiver) Run(ctx context.Context) error {
	if err := r.Listen(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	r.mu.Lock()
	conns := r.conns
	r.mu.Unlock()
	errs := make([]error, len(conns))
	readers := make([]*worker, len(conns))
	for i, c := range conns {
		w := r.newWorker()
		readers[i] = w
		wg.Go(func() {
			if err := w.readLoop(c); err != nil {
				errs[i] = err
				cancel()
			}
		})
	}
	r.mu.Lock()
	r.readers = readers
	r.mu.Unlock()
	wg.Go(func() { r.checkLoop(ctx) })
	<-ctx.Done()
	r.mu.Lock()
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	wg.Wait()
	return errors.Join(errs...)
}

func (r *Receiver) checkLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.CheckInterval)
	defer t.Stop()
	last := r.now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := r.now()
		r.checkAll(now, last)
		last = now
	}
}

// checkAll runs the time-driven checks of every stream at now; last is
// the time of the previous run. A stream that has sent nothing for
// IdleTimeout, and whose stall was reported, is evicted, so that dead
// streams do not hold places that MaxStreams bounds.
func (r *Receiver) checkAll(now, last time.Time) {
	w := r.checker
	var degraded int64
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		w.cur = sh
		for ssrc, st := range sh.streams {
			c := st.check(w, now, &r.cfg, last)
			if c.lost > 0 {
				w.c[cLost].Add(uint64(c.lost))
			}
			if c.jitter >= 0 {
				r.jitter.Observe(c.jitter)
			}
			if c.health != "" && w.health(st, now, c.health, c.detail) {
				st.setHealth(c.health, now, &r.cfg)
			}
			if c.heartbeat {
				w.heartbeat(st, now)
			}
			if st.degraded && now.Sub(st.lastArrival) >= r.cfg.IdleTimeout {
				st.dropBuffers(w, noDrop)
				delete(sh.streams, ssrc)
				if sh.gone == nil {
					sh.gone = make(map[uint32]struct{})
				}
				sh.gone[ssrc] = struct{}{}
				r.nStreams.Add(-1)
				w.c[cEvicted].Add(1)
				continue
			}
			if st.degraded {
				degraded++
			}
		}
		w.cur = nil
		sh.mu.Unlock()
	}
	r.degraded.Store(degraded)
}

// Counters of a worker; the collector sums them over workers.
const (
	cPackets = iota
	cBytes
	cMalformed
	cUnknownSSRC
	cMaxStreams
	cDuplicates
	cReordered
	cRestarts
	cLost
	cDocuments
	cParseErrors
	cTimeouts
	cOverflows
	cIncomplete
	cLate
	cBudget
	cRestartDrops
	cStray
	cEvicted
	cDetections
	cHealth
	numCounters
)

// dropCounter maps a drop reason to its counter.
var dropCounter = [...]int{
	dropTimeout: cTimeouts, dropWindow: cIncomplete, dropSize: cOverflows, dropBudget: cBudget, dropResync: cRestartDrops,
}

// worker is the state of one read loop (or of the check loop): reused
// packet, document, event and buffers, and its counters.
type worker struct {
	r    *Receiver
	pkt  pionrtp.Packet
	doc  Document
	done []bool
	ev   event.Event
	id   []byte
	c    [numCounters]atomic.Uint64

	// cur is the shard whose lock the worker holds, if any.
	cur *shard
	// free holds buffers that streams gave back, for the next document:
	// at most maxFree of at most freeBufSize bytes each, outside the
	// budget (which counts only buffers that streams hold).
	free  [][]byte
	cands [reclaimBatch]candidate
}

const (
	maxFree      = 8
	freeBufSize  = 16 << 10
	minBufSize   = 1 << 10
	reclaimBatch = 16
)

// candidate is a stream that buffers something, for reclaim.
type candidate struct {
	since int64 // bufferedSince
	ssrc  uint32
	shard int
}

// newWorker returns a worker whose counters the metrics include.
func (r *Receiver) newWorker() *worker {
	w := &worker{r: r, free: make([][]byte, 0, maxFree)}
	r.mu.Lock()
	r.workers = append(r.workers, w)
	r.mu.Unlock()
	return w
}

func (w *worker) readLoop(c *net.UDPConn) error {
	br, err := newBatchReader(c, batch, datagramSize)
	if err != nil {
		return fmt.Errorf("cannot read udp socket: %w", err)
	}
	for {
		n, err := br.read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("cannot read udp socket: %w", err)
		}
		// Arrival is the kernel's receive time where the socket gives it
		// (SO_TIMESTAMPNS), so that jitter does not include the wait
		// below nor the batch; otherwise the time the read returned.
		now := w.r.now()
		for i := range n {
			b, trunc := br.datagram(i)
			if trunc {
				w.c[cPackets].Add(1)
				w.c[cMalformed].Add(1)
				continue
			}
			at := now
			if ns, ok := br.stamp(i); ok {
				at = time.Unix(0, ns)
			}
			w.handle(b, at)
		}
		if n < batch/4 {
			// Few datagrams were waiting: let more gather before the next
			// read rather than park and wake for every few packets, the
			// way a network card coalesces interrupts. The socket buffer
			// holds far more than arrives meanwhile, and a quarter of a
			// millisecond is nothing to a metadata stream.
			time.Sleep(coalesce)
		}
	}
}

// handle processes one datagram that arrived at now.
func (w *worker) handle(b []byte, now time.Time) {
	r := w.r
	w.c[cPackets].Add(1)
	w.c[cBytes].Add(uint64(len(b)))
	p := &w.pkt
	if err := p.Unmarshal(b); err != nil || p.Version != 2 {
		w.c[cMalformed].Add(1)
		return
	}
	cam := r.reg.Lookup(p.SSRC)
	if cam == nil {
		w.c[cUnknownSSRC].Add(1)
		return
	}
	sh := &r.shards[p.SSRC%numShards]
	sh.mu.Lock()
	w.cur = sh
	w.packet(sh, cam, now)
	w.cur = nil
	sh.mu.Unlock()
}

// packet processes w.pkt, of camera cam, with sh locked.
func (w *worker) packet(sh *shard, cam *Camera, now time.Time) {
	r, p := w.r, &w.pkt
	st := sh.streams[p.SSRC]
	if st == nil {
		// Add first, so that readers of other shards cannot both take
		// the last place.
		if r.nStreams.Add(1) > int64(r.cfg.MaxStreams) {
			r.nStreams.Add(-1)
			w.c[cMaxStreams].Add(1)
			return
		}
		st = newStream(p.SSRC, cam, now)
		if _, ok := sh.gone[p.SSRC]; ok {
			// Evicted while reported as video_loss: the first check
			// reports it ok again.
			delete(sh.gone, p.SSRC)
			st.degraded, st.stalled = true, true
		}
		sh.streams[p.SSRC] = st
	}
	reordered, restarts := st.stats.Reordered, st.stats.Restarts
	valid, dup := st.stats.Update(p.SequenceNumber, p.Timestamp, rtpUnits(now))
	st.lastArrival = now
	if dup {
		w.c[cDuplicates].Add(1)
		return
	}
	if st.stats.Reordered != reordered {
		w.c[cReordered].Add(1)
	}
	// Field by field: a composite literal is built aside and copied,
	// and the copy stalls on its narrow stores.
	var pk packet
	pk.seq, pk.ts, pk.marker, pk.payload, pk.at = p.SequenceNumber, p.Timestamp, p.Marker, p.Payload, now
	if !valid && !st.stats.onProbation() {
		// Far outside the sequence (A.1): the first packet of a restart,
		// or a stray; the next packet tells.
		st.stashPacket(w, &pk)
		return
	}
	if st.stats.Restarts != restarts {
		w.c[cRestarts].Add(1)
		st.restart(w, &pk, r.cfg.ReorderWait)
	} else if st.hasStash {
		st.dropStash(w)
	}
	st.clock.observe(pk.ts, now.UnixNano())
	st.push(w, &pk, r.cfg.ReorderWait)
}

// drop counts a document dropped for reason.
func (w *worker) drop(reason dropReason) {
	if reason != noDrop && reason != dropQuiet {
		w.c[dropCounter[reason]].Add(1)
	}
}

// grow returns buf, a buffer of st, with room for n more bytes, taking
// any growth from the budget; false when the budget has no room even
// after reclaim. The buffer grows by doubling, to at most limit bytes.
func (w *worker) grow(st *stream, buf []byte, n, limit int) ([]byte, bool) {
	need := len(buf) + n
	if need <= cap(buf) {
		return buf, true
	}
	nb := w.take(need)
	size := cap(nb)
	if nb == nil {
		size = max(min(max(2*cap(buf), minBufSize), limit), need)
	}
	delta := int64(size - cap(buf))
	if !w.reserve(st, delta) {
		w.put(nb)
		return buf, false
	}
	st.reserved += delta
	if nb == nil {
		nb = make([]byte, 0, size)
	}
	nb = append(nb, buf...)
	w.put(buf)
	return nb, true
}

// release gives back a buffer of st and returns nil, to store in its
// place.
func (w *worker) release(st *stream, buf []byte) []byte {
	if cap(buf) == 0 {
		return nil
	}
	st.reserved -= int64(cap(buf))
	w.r.bufBytes.Add(-int64(cap(buf)))
	w.put(buf)
	return nil
}

// take returns the largest free buffer, if it holds need bytes: a
// document that grew a buffer before likely grows as much again.
func (w *worker) take(need int) []byte {
	best := -1
	for i, b := range w.free {
		if cap(b) >= need && (best < 0 || cap(b) > cap(w.free[best])) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	b := w.free[best]
	last := len(w.free) - 1
	w.free[best] = w.free[last]
	w.free[last] = nil
	w.free = w.free[:last]
	return b
}

func (w *worker) put(b []byte) {
	if cap(b) == 0 || cap(b) > freeBufSize || len(w.free) == maxFree {
		return
	}
	w.free = append(w.free, b[:0])
}

// reserve takes n bytes of the buffer budget for self; when the budget is
// spent it first abandons the oldest buffered documents of other streams.
func (w *worker) reserve(self *stream, n int64) bool {
	r := w.r
	budget := int64(r.cfg.MaxBufferBytes)
	if r.bufBytes.Add(n) <= budget {
		return true
	}
	r.bufBytes.Add(-n)
	w.reclaim(self, budget-budget/8-n)
	if r.bufBytes.Add(n) <= budget {
		return true
	}
	r.bufBytes.Add(-n)
	return false
}

// reclaim abandons what the streams that have buffered the longest hold
// (an incomplete document, packets behind a gap), oldest first, until at
// most target bytes are buffered, and counts each as memory_budget. It
// runs with w.cur locked, so the other shards are only tried (TryLock): a
// shard busy at that moment is passed over, which keeps shards from
// waiting for each other. Freeing an eighth of the budget below the need
// keeps a flood from paying a scan of every stream per packet.
func (w *worker) reclaim(self *stream, target int64) {
	r := w.r
	// A few rounds at most: shards passed over, or other readers growing
	// meanwhile, must not keep this one scanning.
	for round := 0; round < 4 && r.bufBytes.Load() > target; round++ {
		n := 0 // w.cands[:n]: the oldest buffering streams, oldest first
		for i := range r.shards {
			sh := &r.shards[i]
			if sh != w.cur && !sh.mu.TryLock() {
				continue
			}
			for ssrc, st := range sh.streams {
				since, ok := st.bufferedSince()
				if !ok || st == self {
					continue
				}
				if n < len(w.cands) {
					n++
				} else if since >= w.cands[n-1].since {
					continue
				}
				j := n - 1
				for ; j > 0 && w.cands[j-1].since > since; j-- {
					w.cands[j] = w.cands[j-1]
				}
				w.cands[j] = candidate{since: since, ssrc: ssrc, shard: i}
			}
			if sh != w.cur {
				sh.mu.Unlock()
			}
		}
		if n == 0 {
			return
		}
		for _, c := range w.cands[:n] {
			if r.bufBytes.Load() <= target {
				return
			}
			sh := &r.shards[c.shard]
			if sh != w.cur && !sh.mu.TryLock() {
				continue
			}
			if st := sh.streams[c.ssrc]; st != nil {
				if since, ok := st.bufferedSince(); ok && since == c.since {
					st.dropBuffers(w, dropBudget)
				}
			}
			if sh != w.cur {
				sh.mu.Unlock()
			}
		}
	}
}

// document turns one reassembled document into detections: an object with
// a plate is one vehicle detection; the other objects of a frame are
// grouped by class into one detection with their count (the most likely
// one's confidence; the track id when there is one object); every
// notification is one detection with its behaviour.
//
// A document that follows lost packets may have lost its beginning;
// unsure is then why they were lost, and a document that does not parse
// is counted as dropped for that reason rather than as a parse error (a
// document without its first packets has no tt:MetadataStream start tag,
// so it cannot parse).
func (w *worker) document(st *stream, doc []byte, ts uint32, unsure dropReason) {
	d := &w.doc
	if err := d.Parse(doc); err != nil {
		if unsure != noDrop {
			w.drop(unsure)
			return
		}
		w.c[cDocuments].Add(1)
		w.c[cParseErrors].Add(1)
		return
	}
	w.c[cDocuments].Add(1)
	fallback := st.clock.wall(ts)
	objs := d.Objects
	if cap(w.done) < len(objs) {
		w.done = make([]bool, len(objs))
	}
	w.done = w.done[:len(objs)]
	clear(w.done)
	idx := 0
	for i := range objs {
		if w.done[i] {
			continue
		}
		o := &objs[i]
		w.done[i] = true
		count, lik, track := 1, o.Likelihood, o.ID
		if o.Plate == "" {
			for j := i + 1; j < len(objs); j++ {
				p := &objs[j]
				if !w.done[j] && p.Plate == "" && p.Frame == o.Frame && p.Class == o.Class {
					w.done[j] = true
					count++
					lik = max(lik, p.Likelihood)
				}
			}
			if count > 1 {
				track = ""
			}
		}
		e := w.detection(st, ts, o.Time, fallback, idx)
		idx++
		e.Object, e.Count, e.Confidence, e.TrackID = o.Class, count, roundConf(lik), track
		e.Plate, e.PlateColor = o.Plate, o.PlateColor
		w.send(e)
	}
	for i := range d.Notifications {
		n := &d.Notifications[i]
		e := w.detection(st, ts, n.Time, fallback, idx)
		idx++
		e.Object, e.Behavior, e.Count, e.Confidence = n.Object, n.Behavior, n.Count, roundConf(n.Likelihood)
		w.send(e)
	}
}

func roundConf(v float64) float64 { return math.Round(v*1000) / 1000 }

// detection starts a camera.detection of stream st. Its id is the SSRC,
// the RTP timestamp, the document time and the index in the document, so
// that the same document gives the same ids.
func (w *worker) detection(st *stream, ts uint32, t, fallback time.Time, idx int) *event.Event {
	if t.IsZero() {
		t = fallback
	}
	e := &w.ev
	e.Reset()
	w.id = append(w.id[:0], "rtp-"...)
	w.id = appendHex8(w.id, st.ssrc)
	w.id = append(w.id, '-')
	w.id = strconv.AppendUint(w.id, uint64(ts), 10)
	w.id = append(w.id, '-')
	w.id = strconv.AppendInt(w.id, t.UnixMilli(), 10)
	w.id = append(w.id, '-')
	w.id = strconv.AppendInt(w.id, int64(idx), 10)
	e.ID = string(w.id)
	e.Type = event.TypeCameraDetection
	e.DeviceID, e.Lat, e.Lon, e.CameraClass = st.cam.ID, st.cam.Lat, st.cam.Lon, st.cam.Class
	e.Time = t
	return e
}

func (w *worker) send(e *event.Event) {
	w.c[cDetections].Add(1)
	w.r.emit(e)
}

// health sends a camera.health event and reports whether the output took
// it.
func (w *worker) health(st *stream, now time.Time, status, detail string) bool {
	e := w.deviceEvent(st, now, "-health-")
	e.Type, e.Status, e.Detail = event.TypeCameraHealth, status, detail
	if !w.r.emit(e) {
		return false
	}
	w.c[cHealth].Add(1)
	return true
}

// heartbeat sends a device.heartbeat; one the output cannot take is not
// sent again, since the next is due within the heartbeat interval.
func (w *worker) heartbeat(st *stream, now time.Time) {
	e := w.deviceEvent(st, now, "-hb-")
	e.Type = event.TypeDeviceHeartbeat
	w.r.emit(e)
}

func (w *worker) deviceEvent(st *stream, now time.Time, kind string) *event.Event {
	e := &w.ev
	e.Reset()
	w.id = append(w.id[:0], "rtp-"...)
	w.id = appendHex8(w.id, st.ssrc)
	w.id = append(w.id, kind...)
	w.id = strconv.AppendInt(w.id, now.UnixMilli(), 10)
	e.ID = string(w.id)
	e.DeviceID, e.Lat, e.Lon, e.Time = st.cam.ID, st.cam.Lat, st.cam.Lon, now
	return e
}

func appendHex8(dst []byte, v uint32) []byte {
	const hex = "0123456789abcdef"
	for s := 28; s >= 0; s -= 4 {
		dst = append(dst, hex[v>>uint(s)&15])
	}
	return dst
}

// StreamStats is a snapshot of one stream, for tests and diagnostics.
type StreamStats struct {
	CameraID   string
	Report     Report
	Duplicates uint64
	Reordered  uint64
	Restarts   uint64
	Degraded   bool
}

// Stream returns a snapshot of the stream of the camera with ssrc.
func (r *Receiver) Stream(ssrc uint32) (StreamStats, bool) {
	sh := &r.shards[ssrc%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.streams[ssrc]
	if st == nil {
		return StreamStats{}, false
	}
	return StreamStats{
		CameraID: st.cam.ID, Report: st.stats.Report(),
		Duplicates: st.stats.Duplicates, Reordered: st.stats.Reordered, Restarts: st.stats.Restarts,
		Degraded: st.degraded,
	}, true
}

// Stream states of StreamReport.
const (
	StateOK       = "ok"
	StateDegraded = "degraded" // reported video_loss for packet loss
	StateStalled  = "stalled"  // reported video_loss for no packets
)

// StreamReport is one stream's RFC 3550 reception figures and reported
// health, for diagnostics (an HTTP view of the gateway). Figures are as
// of the stream's last packet; FractionLost and State as of the last
// check.
type StreamReport struct {
	CameraID string `json:"camera_id"`
	SSRC     uint32 `json:"ssrc"`
	// Expected, Received and Lost are cumulative (A.3): Received counts
	// duplicates, so Lost may be negative.
	Expected uint32 `json:"expected"`
	Received uint32 `json:"received"`
	Lost     int64  `json:"lost"`
	// FractionLost is the share of the packets expected over the last
	// complete loss window (Config.LossWindow) that were lost, in 256ths
	// (A.3 fraction lost).
	FractionLost uint8 `json:"fraction_lost"`
	// Jitter is the interarrival jitter (A.8) in timestamp units, JitterMs
	// the same in milliseconds.
	Jitter     float64   `json:"jitter"`
	JitterMs   float64   `json:"jitter_ms"`
	Reordered  uint64    `json:"reordered"`
	Duplicates uint64    `json:"duplicates"`
	Restarts   uint64    `json:"restarts"`
	LastPacket time.Time `json:"last_packet"`
	// State is StateOK, StateDegraded or StateStalled: what camera.health
	// last reported.
	State string `json:"state"`
}

// Streams returns a report of every stream, sorted by camera id. It
// copies each stream's figures under its shard's lock, one shard at a
// time, and is safe to call concurrently with the receiver.
func (r *Receiver) Streams() []StreamReport {
	out := make([]StreamReport, 0, r.nStreams.Load())
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for _, st := range sh.streams {
			rep := st.stats.Report()
			state := StateOK
			switch {
			case st.degraded && st.stalled:
				state = StateStalled
			case st.degraded:
				state = StateDegraded
			}
			out = append(out, StreamReport{
				CameraID: st.cam.ID, SSRC: st.ssrc,
				Expected: rep.Expected, Received: rep.Received, Lost: rep.Lost, FractionLost: st.fraction,
				Jitter: rep.Jitter, JitterMs: rep.JitterMs(),
				Reordered: st.stats.Reordered, Duplicates: st.stats.Duplicates, Restarts: st.stats.Restarts,
				LastPacket: st.lastArrival, State: state,
			})
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b StreamReport) int { return strings.Compare(a.CameraID, b.CameraID) })
	return out
}

// Totals returns the receiver's counters summed over its loops, by the
// names of the metrics' reasons (for the load tool and tests).
func (r *Receiver) Totals() map[string]uint64 {
	sum := r.sums()
	out := make(map[string]uint64, numCounters)
	for i, n := range counterNames {
		out[n] = sum[i]
	}
	return out
}

var counterNames = [numCounters]string{
	cPackets: "packets", cBytes: "bytes", cMalformed: "malformed", cUnknownSSRC: "unknown_ssrc",
	cMaxStreams: "max_streams", cDuplicates: "duplicates", cReordered: "reordered", cRestarts: "restarts",
	cLost: "lost", cDocuments: "documents", cParseErrors: "parse_error", cTimeouts: "reassembly_timeout",
	cOverflows: "reassembly_overflow", cIncomplete: "incomplete", cLate: "late_fragment",
	cBudget: "memory_budget", cRestartDrops: "restart", cStray: "out_of_sequence", cEvicted: "evicted",
	cDetections: "detections", cHealth: "health",
}
