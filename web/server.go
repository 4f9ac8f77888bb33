package web

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/store"
)

// Store is what the web role reads from and writes to ClickHouse;
// *store.DB is one.
type Store interface {
	InsertAudit(ctx context.Context, entries ...store.AuditEntry) error
	AuditSince(ctx context.Context, since time.Time, limit int, actions ...string) ([]store.AuditEntry, error)
	LatestAlerts(ctx context.Context, f store.AlertFilter) ([]store.AlertRow, error)
	AlertMessages(ctx context.Context, id string) ([]store.AlertRow, error)
	AlertDispatches(ctx context.Context, alertID string) ([]event.Dispatch, error)
	AlertsTrend(ctx context.Context, q store.TrendQuery) ([]store.BucketCount, error)
	EventsTrend(ctx context.Context, q store.TrendQuery) ([]store.BucketCount, error)
	HealthTrend(ctx context.Context, q store.TrendQuery) ([]store.BucketCount, error)
	ResponseTimes(ctx context.Context, q store.TrendQuery) ([]store.ResponseTime, error)
	OutcomeRates(ctx context.Context, q store.TrendQuery) ([]store.OutcomeRate, error)
}

// Deps are what the web role is built on. Only Log is required; without
// Kafka there are no live views and no actions that write to Kafka,
// without Store no history, trends or actions (nothing is done unaudited).
type Deps struct {
	Gatherer   prometheus.Gatherer
	Registerer prometheus.Registerer
	Checks     map[string]Check
	Roles      []string
	Log        *slog.Logger
	Kafka      *kafkaio.Config
	Store      Store
	// City is the city model; nil means city.Default().
	City *city.City
	// Coverage answers the coverage of the circles; nil means an estimate
	// from the live units' positions (see unitCoverage).
	Coverage CoverageSource
	// Location is the zone of trends and display; nil means Asia/Shanghai.
	Location *time.Location
	// HotlistPath is the vehicle hotlist file the rules role reloads;
	// uploads replace it. Empty: uploads are refused.
	HotlistPath string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server serves the web role.
type Server struct {
	cfg         Config
	log         *slog.Logger
	mux         *http.ServeMux
	handler     http.Handler
	routes      []route
	gather      prometheus.Gatherer
	checks      map[string]Check
	roles       []string
	users       map[string]*User
	sessions    *sessions
	live        *live
	hub         *hub
	city        *city.City
	kafka       *kafkaio.Config
	writer      *kafka.Writer
	db          Store
	coverage    CoverageSource
	loc         *time.Location
	hotlistPath string
	hotlistMu   sync.Mutex
	now         func() time.Time
	m           *metrics
	static      fs.FS
	density     densityCache
}

// route is one registered pattern with its policy.
type route struct {
	pattern string
	policy  policy
}

//go:embed static
var staticFiles embed.FS

//go:embed openapi.yaml
var openAPI []byte

// NewApp builds the web role: the routes, the users, the live view. Run
// starts serving and reading the topics.
func NewApp(cfg Config, d Deps) (*Server, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Log == nil {
		return nil, errors.New("cannot build web role: no logger")
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	c := d.City
	if c == nil {
		var err error
		if c, err = city.Default(); err != nil {
			return nil, fmt.Errorf("cannot load the city model: %w", err)
		}
	}
	loc := d.Location
	if loc == nil {
		var err error
		if loc, err = time.LoadLocation("Asia/Shanghai"); err != nil {
			return nil, fmt.Errorf("cannot load time zone Asia/Shanghai: %w", err)
		}
	}
	users := map[string]*User{}
	if cfg.UsersFile != "" {
		var err error
		if users, err = LoadUsers(cfg.UsersFile); err != nil {
			return nil, err
		}
	}
	g := d.Gatherer
	if g == nil {
		g = prometheus.NewRegistry()
	}
	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		return nil, fmt.Errorf("cannot read embedded pages: %w", err)
	}
	m := newMetrics(d.Registerer)
	s := &Server{
		cfg: cfg, log: d.Log.With("role", "web"), mux: http.NewServeMux(), gather: g, checks: d.Checks, roles: d.Roles,
		users: users, sessions: newSessions(cfg.MaxSessions, cfg.SessionTTL), city: c, kafka: d.Kafka, db: d.Store,
		coverage: d.Coverage, loc: loc, hotlistPath: d.HotlistPath, now: now, m: m, static: static,
	}
	s.hub = newHub(cfg.FeedBuffer, cfg.ClientBuffer, cfg.MaxFeedClients, uint64(now().UnixMicro()), m)
	s.live = newLive(c, cfg.LiveAlerts, s.hub, m)
	if s.coverage == nil {
		s.coverage = unitCoverage{city: c, live: s.live}
	}
	if d.Kafka != nil {
		s.writer = d.Kafka.NewWriter()
	}
	s.registerRoutes()
	s.handler = s.secure(s.mux)
	return s, nil
}

// Handler returns the server's routes with their security wrapping.
func (s *Server) Handler() http.Handler { return s.handler }

// Run listens on cfg.Addr until ctx is done, then stops accepting and waits
// up to ShutdownTimeout for open requests.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on an open listener. It reads the topics into the live
// view (when Kafka is configured) and restores mutes and operators'
// actions from the audit log (when ClickHouse is). Stopping: the feed
// streams are ended, the server stops accepting and waits for open
// requests, the topic readers stop, and the writer is closed.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute, // the feed lifts it for its streams
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var tailErr error
	if s.db != nil {
		s.restore(ctx)
	}
	if s.kafka != nil {
		wg.Go(func() {
			if tailErr = s.runTails(ctx); tailErr != nil {
				s.log.Error("live view stopped", "err", tailErr)
				cancel()
			}
		})
	}
	errc := make(chan error, 1)
	go func() {
		if s.cfg.TLSCert != "" {
			errc <- srv.ServeTLS(ln, s.cfg.TLSCert, s.cfg.TLSKey)
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	var serveErr error
	select {
	case err := <-errc:
		serveErr = fmt.Errorf("cannot serve http: %w", err)
		cancel()
	case <-ctx.Done():
	}
	s.hub.close()
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer scancel()
	err := srv.Shutdown(sctx)
	if serveErr == nil {
		<-errc
	}
	cancel()
	wg.Wait()
	if s.writer != nil {
		if cerr := s.writer.Close(); cerr != nil {
			s.log.Warn("cannot close writer", "err", cerr)
		}
	}
	if serveErr != nil {
		return serveErr
	}
	if err != nil {
		return fmt.Errorf("cannot shut down http: %w", err)
	}
	return tailErr
}

// handle registers h for pattern under policy p. Every route goes through
// here, so none is without a policy.
func (s *Server) handle(pattern string, p policy, h http.HandlerFunc) {
	s.routes = append(s.routes, route{pattern, p})
	s.mux.Handle(pattern, s.guard(pattern, p, h))
}

type ctxKey int

const userKey ctxKey = 0

// userOf returns the logged-in user of r; guarded non-public routes always
// have one.
func userOf(r *http.Request) *User {
	u, _ := r.Context().Value(userKey).(*User)
	if u == nil {
		return &User{Name: "", Districts: []string{"\x00none"}} // sees nothing
	}
	return u
}

const sessionCookie = "cw_session"

// guard admits the requests that p admits, with the session's user in the
// context, and counts every answer by route.
func (s *Server) guard(pattern string, p policy, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		defer func() { s.m.requests.WithLabelValues(pattern, strconv.Itoa(rec.code)).Inc() }()
		var u *User
		if c, err := r.Cookie(sessionCookie); err == nil {
			if sess := s.sessions.get(c.Value, s.now()); sess != nil {
				u = sess.user
			}
		}
		if !p.admits(u) {
			switch {
			case p.page && u == nil:
				http.Redirect(rec, r, "/login?next="+urlQueryEscape(r.URL.Path), http.StatusSeeOther)
			case u == nil:
				s.error(rec, r, http.StatusUnauthorized, errors.New("log in first"))
			default:
				s.error(rec, r, http.StatusForbidden, fmt.Errorf("role %s may not use this", u.Role))
			}
			return
		}
		if u != nil {
			r = r.WithContext(context.WithValue(r.Context(), userKey, u))
		}
		h(rec, r)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach Flush and SetWriteDeadline.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// contentSecurityPolicy allows only this origin's scripts, styles,
// images and connections: no inline script or style, no other origin.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// secure sets the security headers on every answer and refuses
// cross-origin writes (Sec-Fetch-Site, then Origin against Host).
func (s *Server) secure(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.error(w, r, http.StatusForbidden, errors.New("cross-origin request refused"))
	}))
	protected := cop.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if r.TLS != nil {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		protected.ServeHTTP(w, r)
	})
}

// apiError is the body of every error answer of the API.
type apiError struct {
	Error string `json:"error"`
}

func (s *Server) error(w http.ResponseWriter, r *http.Request, code int, err error) {
	if code >= 500 {
		s.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "code", code, "err", err)
	}
	s.writeJSON(w, code, apiError{Error: err.Error()})
}

// writeJSON writes v as the JSON body. Every body passes through
// event.RedactPersonal, so that an ID number that reached a field by
// mistake upstream leaves here masked.
func (s *Server) writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		s.log.Warn("cannot encode answer", "err", err)
		code, data = http.StatusInternalServerError, []byte(`{"error":"cannot encode answer"}`)
	}
	data = event.RedactPersonal(data)
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(data)
	w.Write([]byte{'\n'})
}

// decodeJSON reads a JSON body of at most 64 KiB into v, unknown fields
// refused.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("cannot read request body: %w", err)
	}
	return nil
}

// newID returns a fresh random id with prefix.
func newID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// audit records one action; an action that cannot be recorded is not
// done.
func (s *Server) audit(ctx context.Context, who, action, object string, details any) error {
	if s.db == nil {
		return errNoStore
	}
	d, err := json.Marshal(details)
	if err != nil {
		return fmt.Errorf("cannot encode audit details: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.db.InsertAudit(ctx, store.AuditEntry{Time: s.now(), Who: who, Action: action, Object: object, Details: string(d)}); err != nil {
		return fmt.Errorf("cannot record the action: %w", err)
	}
	s.m.actions.WithLabelValues(action).Inc()
	return nil
}

var errNoStore = errors.New("ClickHouse is not configured: actions cannot be audited, so none is done")
var errNoKafka = errors.New("kafka is not configured")

type checkResult struct {
	Name  string `json:"name"`
	Error string `json:"error,omitempty"`
}

func (s *Server) runChecks(ctx context.Context) ([]checkResult, bool) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var out []checkResult
	ok := true
	for name, c := range s.checks {
		r := checkResult{Name: name}
		if err := c(ctx); err != nil {
			r.Error = err.Error()
			ok = false
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, ok
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	res, ok := s.runChecks(r.Context())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	for _, c := range res {
		if c.Error == "" {
			fmt.Fprintf(w, "%s: ok\n", c.Name)
		} else {
			fmt.Fprintf(w, "%s: %s\n", c.Name, c.Error)
		}
	}
}

// registerRoutes is the route table: every route with its policy.
func (s *Server) registerRoutes() {
	s.handle("GET /metrics", public, promhttp.HandlerFor(s.gather, promhttp.HandlerOpts{EnableOpenMetrics: true}).ServeHTTP)
	s.handle("GET /healthz", public, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	s.handle("GET /readyz", public, s.ready)
	s.handle("GET /openapi.yaml", public, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(openAPI)
	})
	s.handle("GET /static/", public, s.serveStatic)

	// Pages.
	s.handle("GET /login", public, s.page("login.html"))
	s.handle("GET /{$}", public, s.home)
	s.handle("GET /console", consolePage, s.page("console.html"))
	s.handle("GET /patrol", patrolPage, s.page("patrol.html"))
	s.handle("GET /trends", trendsPage, s.page("trends.html"))
	s.handle("GET /status", statusPage, s.statusPage)

	// Sessions.
	s.handle("POST /api/login", public, s.login)
	s.handle("POST /api/logout", anyUser, s.logout)
	s.handle("GET /api/me", anyUser, s.me)

	// Alerts and the feed.
	s.handle("GET /api/alerts", viewers, s.listAlerts)
	s.handle("GET /api/alerts/{id}", viewers, s.alertDetail)
	s.handle("POST /api/alerts/{id}/claim", actors, s.alertAction("claim"))
	s.handle("POST /api/alerts/{id}/ack", actors, s.alertAction("ack"))
	s.handle("POST /api/alerts/{id}/close", actors, s.alertAction("close"))
	s.handle("POST /api/alerts/{id}/dispatch", actors, s.dispatchByHand)
	s.handle("POST /api/alerts/{id}/unmask", adminOnly, s.unmask)
	s.handle("GET /api/feed", viewers, s.serveFeed)
	s.handle("GET /api/mutes", viewers, s.listMutes)
	s.handle("POST /api/mutes", actors, s.addMute)

	// Units, dispatches, the city.
	s.handle("GET /api/dispatches", viewers, s.listDispatches)
	s.handle("GET /api/units", viewers, s.listUnits)
	s.handle("GET /api/circles", viewers, s.listCircles)
	s.handle("GET /api/devices", viewers, s.listDevices)
	s.handle("GET /api/city/districts", anyUser, s.districts)
	s.handle("GET /api/health", anyUser, s.health)

	// The patrol page.
	s.handle("GET /api/patrol/current", patrolOnly, s.patrolCurrent)
	s.handle("POST /api/patrol/status", patrolOnly, s.patrolStatus)
	s.handle("POST /api/patrol/position", patrolOnly, s.patrolPosition)

	// Trends and lists.
	s.handle("GET /api/trends/alerts", analysts, s.trend("alerts"))
	s.handle("GET /api/trends/events", analysts, s.trend("events"))
	s.handle("GET /api/trends/response", analysts, s.trend("response"))
	s.handle("GET /api/trends/outcomes", analysts, s.trend("outcomes"))
	s.handle("GET /api/trends/health", analysts, s.trend("health"))
	s.handle("POST /api/hotlists", adminOnly, s.uploadHotlist)
}
