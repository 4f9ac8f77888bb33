package web

import (
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// frame is one message of the live feed. Its data is the JSON of an
// alertRow, already masked.
type frame struct {
	seq      uint64
	event    string
	district string
	alert    muteKey
	data     []byte
}

// muteKey is what a mute is matched against.
type muteKey struct{ rule, subject, district, circle string }

func (k muteKey) mutedBy(m *Mute, now time.Time) bool {
	if !now.Before(m.Until) || m.Rule != k.rule {
		return false
	}
	if m.Device != "" && k.subject == m.Device {
		return true
	}
	return m.Area != "" && (k.district == m.Area || k.circle == m.Area)
}

// hub is the live feed: a ring of the last frames, for clients that
// reconnect with Last-Event-ID, and the connected clients, each with a
// bounded queue. Publishing never blocks: a client whose queue is full
// loses its oldest frame (counted in citywatch_web_feed_dropped_total) and
// is sent a resync event before its next frame, upon which it reloads the
// list.
type hub struct {
	mu        sync.Mutex
	ring      []frame
	start     int // index of the oldest frame in ring
	n         int // frames in ring
	seq       uint64
	clients   map[*client]struct{}
	max       int
	clientBuf int
	m         *metrics
	done      chan struct{}
	closeOnce sync.Once
}

type client struct {
	ch     chan frame
	resync atomic.Bool
}

// newHub returns a feed whose sequence numbers start after first (the
// start time in microseconds, so that they keep increasing across
// restarts and a client's old Last-Event-ID is seen as a gap).
func newHub(size, clientBuf, maxClients int, first uint64, m *metrics) *hub {
	return &hub{ring: make([]frame, size), seq: first, clients: map[*client]struct{}{}, max: maxClients, clientBuf: clientBuf, m: m, done: make(chan struct{})}
}

// publish assigns f the next sequence number and sends it to every client.
func (h *hub) publish(f frame) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	f.seq = h.seq
	if h.n < len(h.ring) {
		h.ring[(h.start+h.n)%len(h.ring)] = f
		h.n++
	} else {
		h.ring[h.start] = f
		h.start = (h.start + 1) % len(h.ring)
	}
	h.m.feedMessages.Inc()
	for c := range h.clients {
		select {
		case c.ch <- f:
			continue
		default:
		}
		// Full: drop the oldest queued frame. Only publish sends, under
		// h.mu, so there is room after one receive (or the client took
		// one meanwhile).
		select {
		case <-c.ch:
		default:
		}
		select {
		case c.ch <- f:
		default:
		}
		c.resync.Store(true)
		h.m.feedDropped.Inc()
	}
}

var errTooManyClients = errors.New("too many feed clients")

// subscribe registers a client. With after set, the frames after seq
// after are returned to be sent first; gap reports that some of them are
// no longer held (or after is from another run), so the client must
// resync.
func (h *hub) subscribe(after uint64, hasAfter bool) (c *client, backlog []frame, gap bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.clients) >= h.max {
		return nil, nil, false, errTooManyClients
	}
	c = &client{ch: make(chan frame, h.clientBuf)}
	h.clients[c] = struct{}{}
	h.m.feedClients.Set(float64(len(h.clients)))
	if !hasAfter {
		return c, nil, false, nil
	}
	oldest := h.seq - uint64(h.n) + 1 // seq of ring's first frame
	switch {
	case after > h.seq:
		return c, nil, true, nil
	case after+1 < oldest:
		gap = true
	}
	for i := 0; i < h.n; i++ {
		f := h.ring[(h.start+i)%len(h.ring)]
		if f.seq > after {
			backlog = append(backlog, f)
		}
	}
	return c, backlog, gap, nil
}

func (h *hub) unsubscribe(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	h.m.feedClients.Set(float64(len(h.clients)))
	h.mu.Unlock()
}

// lastSeq returns the sequence number of the newest frame.
func (h *hub) lastSeq() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seq
}

func (h *hub) clientCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// close ends every feed stream (on shutdown; http.Server.Shutdown does not
// end open streams by itself).
func (h *hub) close() { h.closeOnce.Do(func() { close(h.done) }) }

// feedPing is how often an idle stream gets a comment, so that proxies
// keep it open and a dead client is noticed.
const feedPing = 15 * time.Second

// serveFeed streams the live feed as Server-Sent Events: each frame is an
// event with id: its sequence number. A client reconnecting with
// Last-Event-ID (or ?last_event_id=, for the first connection after
// loading the list) gets the frames it missed from the ring, or a resync
// event when they are gone.
func (s *Server) serveFeed(w http.ResponseWriter, r *http.Request) {
	u := userOf(r)
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = r.URL.Query().Get("last_event_id")
	}
	var after uint64
	hasAfter := false
	if lastID != "" {
		v, err := strconv.ParseUint(lastID, 10, 64)
		if err != nil {
			s.error(w, r, http.StatusBadRequest, errors.New("Last-Event-ID is not a sequence number"))
			return
		}
		after, hasAfter = v, true
	}
	c, backlog, gap, err := s.hub.subscribe(after, hasAfter)
	if err != nil {
		s.error(w, r, http.StatusServiceUnavailable, err)
		return
	}
	defer s.hub.unsubscribe(c)

	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	buf := make([]byte, 0, 4096)
	buf = append(buf, "retry: 2000\n\n"...)
	if gap {
		buf = append(buf, "event: resync\ndata: {}\n\n"...)
	}
	visible := func(f *frame) bool {
		return u.sees(f.district) && !s.live.mutedKey(f.alert, s.now())
	}
	for i := range backlog {
		if visible(&backlog[i]) {
			buf = appendFrame(buf, &backlog[i])
		}
	}
	if _, err := w.Write(buf); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	ping := time.NewTicker(feedPing)
	defer ping.Stop()
	for {
		buf = buf[:0]
		select {
		case <-r.Context().Done():
			return
		case <-s.hub.done:
			return
		case <-ping.C:
			buf = append(buf, ": ping\n\n"...)
		case f := <-c.ch:
			if c.resync.Swap(false) {
				buf = append(buf, "event: resync\ndata: {}\n\n"...)
			}
			if visible(&f) {
				buf = appendFrame(buf, &f)
			}
			// Send what else is queued in the same write.
		more:
			for len(buf) < 64<<10 {
				select {
				case f := <-c.ch:
					if visible(&f) {
						buf = appendFrame(buf, &f)
					}
				default:
					break more
				}
			}
		}
		if len(buf) == 0 {
			continue
		}
		if _, err := w.Write(buf); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		s.m.feedSent.Add(1)
	}
}

func appendFrame(dst []byte, f *frame) []byte {
	dst = append(dst, "id: "...)
	dst = strconv.AppendUint(dst, f.seq, 10)
	dst = append(dst, "\nevent: "...)
	dst = append(dst, f.event...)
	dst = append(dst, "\ndata: "...)
	dst = append(dst, f.data...)
	return append(dst, "\n\n"...)
}
