package web

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRoutes(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "citywatch_test_total", Help: "x"})
	reg.MustRegister(c)
	c.Inc()
	checks := map[string]Check{
		"kafka":      func(context.Context) error { return nil },
		"clickhouse": func(context.Context) error { return errors.New("connection refused") },
	}
	s := New(Config{}, reg, checks, []string{"ingest", "sink"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	tests := []struct {
		path     string
		wantCode int
		wantBody string
	}{
		{"/metrics", 200, "citywatch_test_total 1"},
		{"/healthz", 200, "ok"},
		{"/readyz", 503, "clickhouse: connection refused"},
		{"/", 200, "<code>sink</code>"},
		{"/nothing", 404, ""},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
		if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) {
			t.Errorf("GET %s = %d %q, want %d containing %q", tt.path, rec.Code, rec.Body.String(), tt.wantCode, tt.wantBody)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{Addr: "nonsense"}
	c.SetDefaults()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "http.addr") {
		t.Errorf("Validate() = %v, want http.addr named", err)
	}
}
