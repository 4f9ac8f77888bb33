package viid

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	events sync.Pool // *[]event.Event
}

// New returns the GA/T 1400 server. loc is the zone of times without
// offset (CITYWATCH_TZ).
func New(cfg Config, devices Devices, loc *time.Location, pub Publisher, prom prometheus.Registerer, log *slog.Logger) (*Server, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	met, err := newMetrics(prom)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, pub: pub, m: mapper{devices: devices, loc: loc}, log: log.With("component", "viid"), now: time.Now, met: met}
	if cfg.Username != "" {
		s.auth = newAuth(cfg)
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
	mux.HandleFunc("POST "+PathMotorVehicles, s.push(PathMotorVehicles, "MotorVehicleListObject", "MotorVehicleObject", s.m.motorVehicle))
	mux.HandleFunc("POST "+PathFaces, s.push(PathFaces, "FaceListObject", "FaceObject", s.m.face))
	mux.HandleFunc("POST "+PathPersons, s.push(PathPersons, "PersonListObject", "PersonObject", s.m.person))
	mux.HandleFunc("POST "+PathRegister, s.register)
	mux.HandleFunc("POST "+PathUnregister, s.unregister)
	mux.HandleFunc("POST "+PathKeepalive, s.keepalive)
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
	outcomeBusy
)

func httpStatus(o outcome) int {
	switch o {
	case outcomeBadRequest:
		return http.StatusBadRequest
	case outcomeUnauthorized:
		return http.StatusUnauthorized
	case outcomeBusy:
		return http.StatusServiceUnavailable
	}
	return http.StatusOK
}

func (s *Server) localTime() string {
	return s.now().In(s.m.loc).Format("20060102150405")
}

// readBody reads a body within the limit; the error is the reason for
// the device.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, fmt.Sprintf("body larger than %d bytes", s.cfg.MaxBodyBytes)
	case err != nil:
		return nil, "cannot read body: " + err.Error()
	}
	return body, ""
}

// push handles a list endpoint: every record is mapped on its own; the
// good ones are published together, and each record gets its status.
func (s *Server) push(path, outer, inner string, mapRecord func([]byte, *event.Event) (string, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		if !s.authorized(w, r, path) {
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
		for i, raw := range recs {
			st := &statuses[i]
			st.RequestURL, st.LocalTime = path, lt
			var e event.Event
			id, err := mapRecord(raw, &e)
			st.ID = id
			if err != nil {
				st.StatusCode, st.StatusString = codeOf(err), err.Error()
				s.met.records.WithLabelValues(path, "rejected").Inc()
				continue
			}
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

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	path := PathRegister
	if s.auth != nil && !s.auth.check(w, r, s.now(), s.log) {
		s.met.requests.WithLabelValues(path, "401").Inc()
		return
	}
	id, reason := s.deviceOf(w, r, "RegisterObject")
	if reason != "" {
		s.answerSystem(w, path, outcomeBadRequest, codeInvalidJSONContent, reason, "")
		return
	}
	if s.auth != nil {
		if err := s.auth.register(id, s.now()); err != nil {
			s.answerSystem(w, path, outcomeBusy, codeDeviceBusy, err.Error(), id)
			return
		}
	}
	s.answerSystem(w, path, outcomeOK, codeOK, "OK", id)
}

func (s *Server) unregister(w http.ResponseWriter, r *http.Request) {
	path := PathUnregister
	if s.auth != nil && !s.auth.check(w, r, s.now(), s.log) {
		s.met.requests.WithLabelValues(path, "401").Inc()
		return
	}
	id, reason := s.deviceOf(w, r, "UnRegisterObject")
	if reason != "" {
		s.answerSystem(w, path, outcomeBadRequest, codeInvalidJSONContent, reason, "")
		return
	}
	if s.auth != nil {
		s.auth.unregister(id)
	}
	s.answerSystem(w, path, outcomeOK, codeOK, "OK", id)
}

// keepalive publishes a device.heartbeat for a registered device of the
// registry.
func (s *Server) keepalive(w http.ResponseWriter, r *http.Request) {
	path := PathKeepalive
	id, reason := s.deviceOf(w, r, "KeepaliveObject")
	if reason != "" {
		s.answerSystem(w, path, outcomeBadRequest, codeInvalidJSONContent, reason, "")
		return
	}
	now := s.now()
	if s.auth != nil && !s.auth.touch(id, now) {
		s.answerSystem(w, path, outcomeUnauthorized, codeInvalidOperation, "device not registered", id)
		return
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

// authorized checks that the pushing device (User-Identify header) is
// registered, when authentication is configured.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request, path string) bool {
	if s.auth == nil {
		return true
	}
	id := r.Header.Get("User-Identify")
	if id != "" && s.auth.registered(id, s.now()) {
		return true
	}
	s.answerOne(w, path, outcomeUnauthorized, codeInvalidOperation, "device not registered (register at "+PathRegister+" and send User-Identify)", "")
	return false
}

type metrics struct {
	records  *prometheus.CounterVec
	requests *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_viid_records_total",
			Help: "GA/T 1400 records received, by endpoint and result (accepted, rejected, busy, failed).",
		}, []string{"path", "result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_viid_requests_total",
			Help: "GA/T 1400 requests answered, by endpoint and HTTP status.",
		}, []string{"path", "code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "citywatch_viid_request_seconds",
			Help:    "Time to answer a GA/T 1400 push, including the write to Kafka.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"path"}),
	}
	for _, c := range []prometheus.Collector{m.records, m.requests, m.seconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("cannot register GA/T 1400 metrics: %w", err)
		}
	}
	return m, nil
}
