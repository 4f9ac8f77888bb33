package viid

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"citywatch/event"
	"citywatch/internal/city"
)

// GA/T 1400 StatusCode values of a ResponseStatusObject.
const (
	codeOK                 = 0
	codeOtherError         = 1
	codeDeviceBusy         = 2
	codeInvalidOperation   = 4
	codeInvalidJSONFormat  = 7
	codeInvalidJSONContent = 8
)

// Server serves the GA/T 1400 endpoints.
type Server struct {
	cfg    Config
	pub    Publisher
	m      mapper
	auth   *auth
	log    *slog.Logger
	now    func() time.Time
	met    *metrics
	limit  limiter
	events sync.Pool // *[]event.Event
}

// New returns the GA/T 1400 server. loc is the zone of times without
// offset (CITYWATCH_TZ).
func New(cfg Config, devices Devices, loc *time.Location, pub Publisher, prom prometheus.Registerer, log *slog.Logger) (*Server, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, pub: pub, m: mapper{devices: devices, loc: loc}, log: log.With("component", "viid"), now: time.Now,
		limit: limiter{maxN: cfg.MaxInFlight, maxBytes: cfg.MaxInFlightBytes,
			addrN: cfg.MaxInFlightPerAddress, addrBytes: cfg.MaxInFlightBytesPerAddress, byAddr: map[string]held{}}}
	met, err := newMetrics(prom, &s.limit)
	if err != nil {
		return nil, err
	}
	s.met = met
	if cfg.Username != "" {
		s.auth = newAuth(cfg)
	} else {
		s.log.Warn("GA/T 1400 authentication is off: any client can push records and keepalives as any device; " +
			"set gateway.viid.username and gateway.viid.password to require Digest registration")
	}
	return s, nil
}

// Paths of the endpoints.
const (
	PathMotorVehicles = "/VIID/MotorVehicles"
	PathFaces         = "/VIID/Faces"
	PathPersons       = "/VIID/Persons"
	PathRegister      = "/VIID/System/Register"
	PathUnregister    = "/VIID/System/UnRegister"
	PathKeepalive     = "/VIID/System/Keepalive"
)

// Register adds the endpoints to mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST "+PathMotorVehicles, s.admit(PathMotorVehicles, s.push(PathMotorVehicles, "MotorVehicleListObject", "MotorVehicleObject", s.m.motorVehicle)))
	mux.HandleFunc("POST "+PathFaces, s.admit(PathFaces, s.push(PathFaces, "FaceListObject", "FaceObject", s.m.face)))
	mux.HandleFunc("POST "+PathPersons, s.admit(PathPersons, s.push(PathPersons, "PersonListObject", "PersonObject", s.m.person)))
	mux.HandleFunc("POST "+PathRegister, s.admit(PathRegister, s.register))
	mux.HandleFunc("POST "+PathUnregister, s.admit(PathUnregister, s.unregister))
	mux.HandleFunc("POST "+PathKeepalive, s.admit(PathKeepalive, s.keepalive))
}

// limiter bounds the requests in flight and the body bytes they reserve,
// in all and per client address.
type limiter struct {
	maxN      int
	maxBytes  int64
	addrN     int
	addrBytes int64

	mu    sync.Mutex
	n     int
	bytes int64
	// byAddr holds what each address has in flight; an address leaves it
	// with its last request, so it holds at most maxN entries.
	byAddr map[string]held
}

type held struct {
	n     int
	bytes int64
}

// acquire reserves room for a request of size body bytes from addr, or
// returns why there is none: the reason label of the dropped counter.
func (l *limiter) acquire(addr string, size int64) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.byAddr[addr]
	switch {
	case l.n >= l.maxN:
		return "in_flight_requests"
	case l.bytes+size > l.maxBytes:
		return "in_flight_bytes"
	case a.n >= l.addrN:
		return "address_requests"
	case a.bytes+size > l.addrBytes:
		return "address_bytes"
	}
	l.n++
	l.bytes += size
	a.n++
	a.bytes += size
	l.byAddr[addr] = a
	return ""
}

func (l *limiter) release(addr string, size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n--
	l.bytes -= size
	a := l.byAddr[addr]
	if a.n--; a.n <= 0 {
		delete(l.byAddr, addr)
		return
	}
	a.bytes -= size
	l.byAddr[addr] = a
}

func (l *limiter) inFlight() (int, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n, l.bytes
}

// admit runs h only when the request fits within MaxInFlight and
// MaxInFlightBytes, and within its address's share of them; otherwise it
// answers 503 with Retry-After at once, before reading the body, as when
// Kafka cannot keep up: a device resends either way, and a flood of
// requests cannot hold more than the bound, nor one address more than
// its share.
func (s *Server) admit(path string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		size := s.bodyLimit(path)
		if r.ContentLength >= 0 && r.ContentLength < size {
			size = r.ContentLength
		}
		addr := remoteIP(r)
		if reason := s.limit.acquire(addr, size); reason != "" {
			s.met.dropped.WithLabelValues(path, reason).Inc()
			const why = "too many requests in flight, retry later"
			if listPath(path) {
				s.answerOne(w, path, outcomeBusy, codeDeviceBusy, why, "")
			} else {
				s.answerSystem(w, path, outcomeBusy, codeDeviceBusy, why, "")
			}
			return
		}
		defer s.limit.release(addr, size)
		h(w, r)
	}
}

// status is one ResponseStatusObject.
type status struct {
	RequestURL   string `json:"RequestURL"`
	StatusCode   int    `json:"StatusCode"`
	StatusString string `json:"StatusString"`
	ID           string `json:"Id"`
	LocalTime    string `json:"LocalTime"`
}

// outcome is how a request as a whole went; httpStatus maps it to the
// HTTP status code, in this one place.
type outcome uint8

const (
	outcomeOK outcome = iota
	outcomeBadRequest
	outcomeUnauthorized
	outcomeForbidden
	outcomeBusy
)

func httpStatus(o outcome) int {
	switch o {
	case outcomeBadRequest:
		return http.StatusBadRequest
	case outcomeUnauthorized:
		return http.StatusUnauthorized
	case outcomeForbidden:
		return http.StatusForbidden
	case outcomeBusy:
		return http.StatusServiceUnavailable
	}
	return http.StatusOK
}

func (s *Server) localTime() string {
	return s.now().In(s.m.loc).Format("20060102150405")
}

// maxSystemBody bounds the body of a registration or keepalive, a few
// hundred bytes in practice. Keepalive reads its body before it can tell
// who sent it, so a client without credentials could otherwise hold
// MaxBodyBytes of the in-flight budget per request by sending slowly.
const maxSystemBody = 64 << 10

// listPath reports whether path is an endpoint of record lists, as
// opposed to registration and keepalive.
func listPath(path string) bool {
	return path == PathMotorVehicles || path == PathFaces || path == PathPersons
}

// bodyLimit is the largest body the endpoint at path reads.
func (s *Server) bodyLimit(path string) int64 {
	if listPath(path) {
		return s.cfg.MaxBodyBytes
	}
	return min(maxSystemBody, s.cfg.MaxBodyBytes)
}

// readBody reads a body within the endpoint's limit; the error is the
// reason for the device.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, string) {
	limit := s.bodyLimit(r.URL.Path)
	// A declared length is read into one buffer of that size (admit has
	// reserved it), rather than one that doubles its way up.
	var buf bytes.Buffer
	if n := r.ContentLength; n > 0 && n <= limit {
		buf.Grow(int(n) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	body := buf.Bytes()
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, fmt.Sprintf("body larger than %d bytes", limit)
	case err != nil:
		return nil, "cannot read body: " + err.Error()
	}
	return body, ""
}

// push handles a list endpoint: every record is mapped on its own; the
// good ones are published together, and each record gets its status.
func (s *Server) push(path, outer, inner string, mapRecord func([]byte, *event.Event, *recordInfo) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		pusher, ok := s.authorized(w, r, path)
		if !ok {
			return
		}
		body, reason := s.readBody(w, r)
		if reason != "" {
			s.answerOne(w, path, outcomeBadRequest, codeInvalidJSONFormat, reason, "")
			return
		}
		recs, err := list(body, outer, inner)
		if err != nil {
			s.answerOne(w, path, outcomeBadRequest, codeInvalidJSONFormat, "cannot decode body: "+jsonReason(err), "")
			return
		}
		if len(recs) > s.cfg.MaxRecords {
			s.answerOne(w, path, outcomeBadRequest, codeInvalidJSONContent, fmt.Sprintf("%d records, limit %d", len(recs), s.cfg.MaxRecords), "")
			return
		}
		evp := s.eventSlice(len(recs))
		defer s.events.Put(evp)
		evs := (*evp)[:len(recs)]
		statuses := make([]status, len(recs))
		good := evs[:0]
		goodIdx := make([]int, 0, len(recs))
		lt := s.localTime()
		var ri recordInfo
		for i, raw := range recs {
			st := &statuses[i]
			st.RequestURL, st.LocalTime = path, lt
			var e event.Event
			ri.id, ri.device, ri.misspelt = "", "", ri.misspelt[:0]
			err := mapRecord(raw, &e, &ri)
			st.ID = ri.id
			s.noteMisspelt(path, pusher, &ri)
			if err != nil {
				st.StatusCode, st.StatusString = codeOf(err), err.Error()
				s.met.records.WithLabelValues(path, "rejected").Inc()
				continue
			}
			s.noteForeign(path, pusher, &ri, &e)
			good = append(good, e)
			goodIdx = append(goodIdx, i)
		}
		o := outcomeOK
		if len(good) > 0 {
			ctx, cancel := context.WithTimeout(r.Context(), s.cfg.AckTimeout)
			err := s.pub.Publish(ctx, good)
			cancel()
			result := "accepted"
			code, str := codeOK, "OK"
			switch {
			case errors.Is(err, ErrBusy):
				o, result, code, str = outcomeBusy, "busy", codeDeviceBusy, "gateway busy, retry later"
			case err != nil:
				o, result, code, str = outcomeBusy, "failed", codeOtherError, "not written, retry later"
				if r.Context().Err() == nil { // not just a device that hung up
					s.log.Warn("cannot publish GA/T 1400 records", "path", path, "records", len(good), "err", err)
				}
			}
			for _, i := range goodIdx {
				statuses[i].StatusCode, statuses[i].StatusString = code, str
			}
			s.met.records.WithLabelValues(path, result).Add(float64(len(good)))
		}
		s.answer(w, path, o, statuses)
		s.met.seconds.WithLabelValues(path).Observe(s.now().Sub(start).Seconds())
	}
}

// noteMisspelt counts the members of a record that look like typos of
// fields the receiver reads, and names them at debug level: the metric
// tells an operator that a vendor misspells, the log which field.
func (s *Server) noteMisspelt(path, pusher string, ri *recordInfo) {
	if len(ri.misspelt) == 0 {
		return
	}
	s.met.misspelt.WithLabelValues(path).Add(float64(len(ri.misspelt)))
	if !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	for _, m := range ri.misspelt {
		s.log.Debug("GA/T 1400 record member looks like a misspelt field", "path", path, "member", m.member, "field", m.field,
			"record", ri.id, "user_identify", shorten(pusher))
	}
}

// noteForeign counts the records a registered device pushes for another
// device, when authentication is on. GA/T 1400 lets a platform push for
// the devices under it, and the registry does not say which devices are
// under which platform, so such records are accepted; the count (and the
// debug log) shows an operator which registered identities push for
// devices other than themselves. A record is the pusher's own when the
// pusher is its DeviceID or the device of its event (the tollgate).
func (s *Server) noteForeign(path, pusher string, ri *recordInfo, e *event.Event) {
	if s.auth == nil || pusher == ri.device || pusher == e.DeviceID {
		return
	}
	s.met.foreign.WithLabelValues(path).Inc()
	s.log.Debug("GA/T 1400 record of another device", "path", path, "user_identify", shorten(pusher), "device", e.DeviceID, "record", ri.id)
}

func (s *Server) eventSlice(n int) *[]event.Event {
	if p, ok := s.events.Get().(*[]event.Event); ok && cap(*p) >= n {
		return p
	}
	evs := make([]event.Event, n)
	return &evs
}

func codeOf(err error) int {
	var re *recordError
	if errors.As(err, &re) {
		return re.code
	}
	return codeOtherError
}

func (s *Server) answer(w http.ResponseWriter, path string, o outcome, statuses []status) {
	var resp struct {
		ResponseStatusListObject struct {
			ResponseStatusObject []status `json:"ResponseStatusObject"`
		} `json:"ResponseStatusListObject"`
	}
	resp.ResponseStatusListObject.ResponseStatusObject = statuses
	if statuses == nil {
		resp.ResponseStatusListObject.ResponseStatusObject = []status{}
	}
	s.write(w, path, o, resp)
}

func (s *Server) answerOne(w http.ResponseWriter, path string, o outcome, code int, reason, id string) {
	s.answer(w, path, o, []status{{RequestURL: path, StatusCode: code, StatusString: reason, ID: id, LocalTime: s.localTime()}})
}

// answerSystem is the single ResponseStatusObject of the System
// endpoints, as GA/T 1400 answers them.
func (s *Server) answerSystem(w http.ResponseWriter, path string, o outcome, code int, reason, id string) {
	resp := struct {
		ResponseStatusObject status `json:"ResponseStatusObject"`
	}{status{RequestURL: path, StatusCode: code, StatusString: reason, ID: id, LocalTime: s.localTime()}}
	s.write(w, path, o, resp)
}

func (s *Server) write(w http.ResponseWriter, path string, o outcome, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "cannot encode answer", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/VIID+JSON;charset=UTF-8")
	if o == outcomeBusy {
		h.Set("Retry-After", strconv.Itoa(int(s.cfg.RetryAfter/time.Second)))
	}
	code := httpStatus(o)
	w.WriteHeader(code)
	_, _ = w.Write(b)
	s.met.requests.WithLabelValues(path, strconv.Itoa(code)).Inc()
}

// deviceOf reads the DeviceID of a System request body.
func (s *Server) deviceOf(w http.ResponseWriter, r *http.Request, object string) (string, string) {
	body, reason := s.readBody(w, r)
	if reason != "" {
		return "", reason
	}
	o, err := member(body, object)
	if err != nil {
		return "", "cannot decode body: " + jsonReason(err)
	}
	v, err := member(o, "DeviceID")
	if err != nil {
		return "", "DeviceID missing"
	}
	var id text
	if err := id.UnmarshalJSON(v); err != nil || id == "" || len(id) > 64 {
		return "", "DeviceID missing or not a device id"
	}
	return string(id), ""
}

// remoteIP is the address a registration is bound to.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// ownID checks, with DeviceIDIsUsername, that a device registers (or
// unregisters) under the Digest username: the Digest response covers
// neither the body nor the DeviceID in it.
func (s *Server) ownID(w http.ResponseWriter, path, user, id string) bool {
	if !s.cfg.DeviceIDIsUsername || id == user {
		return true
	}
	s.log.Info("GA/T 1400 registration refused: DeviceID is not the Digest username", "path", path, "device", shorten(id), "user", shorten(user))
	s.answerSystem(w, path, outcomeForbidden, codeInvalidOperation, "DeviceID must be the Digest username", id)
	return false
}

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	path := PathRegister
	var user string
	if s.auth != nil {
		var ok bool
		if user, ok = s.auth.check(w, r, s.now(), s.log); !ok {
			s.met.requests.WithLabelValues(path, "401").Inc()
			return
		}
	}
	id, reason := s.deviceOf(w, r, "RegisterObject")
	if reason != "" {
		s.answerSystem(w, path, outcomeBadRequest, codeInvalidJSONContent, reason, "")
		return
	}
	if s.auth != nil {
		if !s.ownID(w, path, user, id) {
			return
		}
		if err := s.auth.register(id, remoteIP(r), s.now()); err != nil {
			s.answerSystem(w, path, outcomeBusy, codeDeviceBusy, err.Error(), id)
			return
		}
	}
	s.answerSystem(w, path, outcomeOK, codeOK, "OK", id)
}

func (s *Server) unregister(w http.ResponseWriter, r *http.Request) {
	path := PathUnregister
	var user string
	if s.auth != nil {
		var ok bool
		if user, ok = s.auth.check(w, r, s.now(), s.log); !ok {
			s.met.requests.WithLabelValues(path, "401").Inc()
			return
		}
	}
	id, reason := s.deviceOf(w, r, "UnRegisterObject")
	if reason != "" {
		s.answerSystem(w, path, outcomeBadRequest, codeInvalidJSONContent, reason, "")
		return
	}
	if s.auth != nil {
		if !s.ownID(w, path, user, id) {
			return
		}
		s.auth.unregister(id)
	}
	s.answerSystem(w, path, outcomeOK, codeOK, "OK", id)
}

// keepalive extends a registration and publishes a device.heartbeat for
// a camera or checkpoint of the registry.
func (s *Server) keepalive(w http.ResponseWriter, r *http.Request) {
	path := PathKeepalive
	id, reason := s.deviceOf(w, r, "KeepaliveObject")
	if reason != "" {
		s.answerSystem(w, path, outcomeBadRequest, codeInvalidJSONContent, reason, "")
		return
	}
	now := s.now()
	if s.auth != nil {
		if why := s.auth.lookup(id, remoteIP(r), now, true); why != "" {
			s.answerSystem(w, path, outcomeUnauthorized, codeInvalidOperation, why+" (register at "+PathRegister+")", id)
			return
		}
	}
	d := s.m.devices.Device(id)
	if d == nil || d.Kind != city.KindCamera && d.Kind != city.KindCheckpoint {
		s.answerSystem(w, path, outcomeOK, codeInvalidOperation, "unknown device", id)
		return
	}
	e := []event.Event{{
		ID:   "viid-hb-" + id + "-" + strconv.FormatInt(now.UnixMilli(), 10),
		Type: event.TypeDeviceHeartbeat, DeviceID: d.ID, Time: now.In(s.m.loc), Lat: d.Lat, Lon: d.Lon,
	}}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.AckTimeout)
	defer cancel()
	if err := s.pub.Publish(ctx, e); err != nil {
		s.answerSystem(w, path, outcomeBusy, codeDeviceBusy, "gateway busy, retry later", id)
		return
	}
	s.answerSystem(w, path, outcomeOK, codeOK, "OK", id)
}

// authorized returns the pushing device (User-Identify header) and, when
// authentication is configured, checks that it holds a live registration
// from this address. The header itself proves nothing; the registration
// it names was made with the password, and (unless AnyAddress) from this
// address.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request, path string) (string, bool) {
	id := r.Header.Get("User-Identify")
	if s.auth == nil {
		return id, true
	}
	why := notRegistered
	if id != "" {
		why = s.auth.lookup(id, remoteIP(r), s.now(), false)
	}
	if why == "" {
		return id, true
	}
	s.answerOne(w, path, outcomeUnauthorized, codeInvalidOperation, why+" (register at "+PathRegister+" and send User-Identify)", "")
	return "", false
}

type metrics struct {
	records  *prometheus.CounterVec
	requests *prometheus.CounterVec
	dropped  *prometheus.CounterVec
	misspelt *prometheus.CounterVec
	foreign  *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer, l *limiter) (*metrics, error) {
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_viid_records_total",
			Help: "GA/T 1400 records received, by endpoint and result (accepted, rejected, busy, failed).",
		}, []string{"path", "result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_viid_requests_total",
			Help: "GA/T 1400 requests answered, by endpoint and HTTP status.",
		}, []string{"path", "code"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_viid_requests_dropped_total",
			Help: "GA/T 1400 requests answered 503 before their body was read, by endpoint and reason (in_flight_requests, in_flight_bytes, and address_requests, address_bytes: one client address at its share).",
		}, []string{"path", "reason"}),
		misspelt: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_viid_misspelt_fields_total",
			Help: "Members of GA/T 1400 records that are not a field the receiver reads but a typo away from an absent one (PassTimme, Speeed), by endpoint; the debug log names them.",
		}, []string{"path"}),
		foreign: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_viid_foreign_records_total",
			Help: "GA/T 1400 records accepted from a registered device (User-Identify) for another device, by endpoint; counted only with authentication on.",
		}, []string{"path"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "citywatch_viid_request_seconds",
			Help:    "Time to answer a GA/T 1400 push, including the write to Kafka.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"path"}),
	}
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "citywatch_viid_in_flight_requests",
		Help: "GA/T 1400 requests being handled (bounded by gateway.viid.max_in_flight).",
	}, func() float64 { n, _ := l.inFlight(); return float64(n) })
	inFlightBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "citywatch_viid_in_flight_bytes",
		Help: "Body bytes reserved by the GA/T 1400 requests being handled (bounded by gateway.viid.max_in_flight_bytes).",
	}, func() float64 { _, b := l.inFlight(); return float64(b) })
	for _, c := range []prometheus.Collector{m.records, m.requests, m.dropped, m.misspelt, m.foreign, m.seconds, inFlight, inFlightBytes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("cannot register GA/T 1400 metrics: %w", err)
		}
	}
	return m, nil
}
