package rtp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime"
	"strconv"
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
	_       [40]byte // keep shards' mutexes on separate cache lines
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

	mu      sync.Mutex
	conns   []*net.UDPConn
	workers []*worker // the checker's, then one per socket
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
	errs := make([]error, len(r.conns))
	for i, c := range r.conns {
		w := r.newWorker()
		wg.Go(func() {
			if err := w.readLoop(c); err != nil {
				errs[i] = err
				cancel()
			}
		})
	}
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
// the time of the previous run.
func (r *Receiver) checkAll(now, last time.Time) {
	w := r.checker
	var degraded int64
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for _, st := range sh.streams {
			c := st.check(now, &r.cfg, last)
			if c.timedOut {
				w.c[cTimeouts].Add(1)
			}
			if c.lost > 0 {
				w.c[cLost].Add(uint64(c.lost))
			}
			if c.jitter >= 0 {
				r.jitter.Observe(c.jitter)
			}
			if c.health != "" {
				w.health(st, now, c.health, c.detail)
			}
			if c.heartbeat {
				w.heartbeat(st, now)
			}
			if st.degraded {
				degraded++
			}
		}
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
	cDetections
	cHealth
	numCounters
)

// worker is the state of one read loop (or of the check loop): reused
// packet, document, event and buffers, and its counters.
type worker struct {
	r       *Receiver
	pkt     pionrtp.Packet
	doc     Document
	scratch []byte
	done    []bool
	ev      event.Event
	id      []byte
	c       [numCounters]atomic.Uint64
}

// newWorker returns a worker whose counters the metrics include.
func (r *Receiver) newWorker() *worker {
	w := &worker{r: r}
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
		now := w.r.now()
		for i := range n {
			b, trunc := br.datagram(i)
			if trunc {
				w.c[cPackets].Add(1)
				w.c[cMalformed].Add(1)
				continue
			}
			w.handle(b, now)
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
	defer sh.mu.Unlock()
	st := sh.streams[p.SSRC]
	if st == nil {
		if r.nStreams.Load() >= int64(r.cfg.MaxStreams) {
			w.c[cMaxStreams].Add(1)
			return
		}
		st = newStream(p.SSRC, cam, now)
		st.refTS, st.refArrival = p.Timestamp, now
		sh.streams[p.SSRC] = st
		r.nStreams.Add(1)
	}
	reordered, restarts := st.stats.Reordered, st.stats.Restarts
	_, dup := st.stats.Update(p.SequenceNumber, p.Timestamp, rtpUnits(now))
	st.lastArrival = now
	if dup {
		w.c[cDuplicates].Add(1)
		return
	}
	if st.stats.Reordered != reordered {
		w.c[cReordered].Add(1)
	}
	if st.stats.Restarts != restarts {
		w.c[cRestarts].Add(1)
	}
	out, doc := st.addFragment(p.SequenceNumber, p.Timestamp, p.Marker, p.Payload, now, r.cfg.MaxDocumentBytes, &w.scratch)
	switch out {
	case fragOverflow:
		w.c[cOverflows].Add(1)
	case fragIncomplete:
		w.c[cIncomplete].Add(1)
	case fragLate:
		w.c[cLate].Add(1)
	case fragComplete:
		w.document(st, doc, p.Timestamp)
	}
}

// document turns one reassembled document into detections: an object with
// a plate is one vehicle detection; the other objects of a frame are
// grouped by class into one detection with their count (the most likely
// one's confidence; the track id when there is one object); every
// notification is one detection with its behaviour.
func (w *worker) document(st *stream, doc []byte, ts uint32) {
	w.c[cDocuments].Add(1)
	d := &w.doc
	if err := d.Parse(doc); err != nil {
		w.c[cParseErrors].Add(1)
		return
	}
	fallback := st.wallTime(ts)
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

func (w *worker) health(st *stream, now time.Time, status, detail string) {
	e := w.deviceEvent(st, now, "-health-")
	e.Type, e.Status, e.Detail = event.TypeCameraHealth, status, detail
	w.c[cHealth].Add(1)
	w.r.emit(e)
}

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
	cDetections: "detections", cHealth: "health",
}
