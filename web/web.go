// Package web is citywatch's HTTP face: Prometheus metrics, health and
// readiness probes, and the pages and API that operators, patrol units and
// analysts use. It sits on top of every other package and chooses the HTTP
// status codes.
package web

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config is the web role's configuration.
type Config struct {
	// Addr is the listen address (CITYWATCH_HTTP_ADDR).
	Addr string `yaml:"addr"`
	// ShutdownTimeout bounds the wait for open requests when stopping.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// SetDefaults fills zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.Addr == "" {
		c.Addr = ":8080"
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 5 * time.Second
	}
}

// Validate names the first field that is not usable.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("http.addr: %q is not host:port: %w", c.Addr, err)
	}
	if c.ShutdownTimeout <= 0 {
		return errors.New("http.shutdown_timeout: must be positive")
	}
	return nil
}

// Check is a readiness check: nil when the dependency answers.
type Check func(ctx context.Context) error

// Server serves the web role.
type Server struct {
	cfg    Config
	gather prometheus.Gatherer
	checks map[string]Check
	roles  []string
	log    *slog.Logger
	mux    *http.ServeMux
}

// New returns a server exposing g's metrics and the readiness checks.
func New(cfg Config, g prometheus.Gatherer, checks map[string]Check, roles []string, log *slog.Logger) *Server {
	cfg.SetDefaults()
	s := &Server{cfg: cfg, gather: g, checks: checks, roles: roles, log: log.With("role", "web"), mux: http.NewServeMux()}
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("GET /readyz", s.ready)
	s.mux.HandleFunc("GET /{$}", s.index)
	return s
}

// Handler returns the server's routes.
func (s *Server) Handler() http.Handler { return s.mux }

// Run listens on cfg.Addr until ctx is done, then stops accepting and waits
// up to ShutdownTimeout for open requests.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on an open listener.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("cannot serve http: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc
	if err != nil {
		return fmt.Errorf("cannot shut down http: %w", err)
	}
	return nil
}

type checkResult struct {
	Name  string
	Error string
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

var indexPage = template.Must(template.New("index").Parse(`<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>citywatch</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:48rem}code{background:#eee;padding:0 .2rem}.bad{color:#b00}</style></head>
<body><h1>citywatch 城市安防实时处理</h1>
<p>运行中的角色 (roles): {{range .Roles}}<code>{{.}}</code> {{end}}</p>
<h2>依赖 (dependencies)</h2><ul>{{range .Checks}}<li>{{.Name}}: {{if .Error}}<span class="bad">{{.Error}}</span>{{else}}ok{{end}}</li>{{end}}</ul>
<p><a href="/metrics">/metrics</a> · <a href="/readyz">/readyz</a> · <a href="/healthz">/healthz</a></p>
</body></html>`))

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	res, _ := s.runChecks(r.Context())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := indexPage.Execute(w, struct {
		Roles  []string
		Checks []checkResult
	}{s.roles, res}); err != nil {
		s.log.Warn("cannot render index", "err", err)
	}
}
