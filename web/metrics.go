package web

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the web role's metrics. Labels hold routes and codes, never
// ids.
type metrics struct {
	requests     *prometheus.CounterVec
	feedClients  prometheus.Gauge
	feedMessages prometheus.Counter
	feedSent     prometheus.Counter
	feedDropped  prometheus.Counter
	liveAlerts   prometheus.Gauge
	liveEvicted  prometheus.Counter
	tailErrors   *prometheus.CounterVec
	logins       *prometheus.CounterVec
	actions      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_web_requests_total", Help: "HTTP requests answered, by route pattern and status code.",
		}, []string{"route", "code"}),
		feedClients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "citywatch_web_feed_clients", Help: "Connected live-feed (SSE) clients.",
		}),
		feedMessages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citywatch_web_feed_messages_total", Help: "Messages published on the live feed.",
		}),
		feedSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citywatch_web_feed_writes_total", Help: "Writes to live-feed clients (each carries one or more messages).",
		}),
		feedDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citywatch_web_feed_dropped_total", Help: "Feed messages dropped (oldest first) for clients too slow to take them; each such client is told to resync.",
		}),
		liveAlerts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "citywatch_web_live_alerts", Help: "Situations (alert ids) held in the live view.",
		}),
		liveEvicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citywatch_web_live_evicted_total", Help: "Situations dropped from the live view (least recently updated first) to stay within http.live_alerts.",
		}),
		tailErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_web_tail_errors_total", Help: "Messages the live view could not read or decode, by topic.",
		}, []string{"topic"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_web_logins_total", Help: "Login attempts by result (ok, failed, locked).",
		}, []string{"result"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_web_actions_total", Help: "Audited actions by action name.",
		}, []string{"action"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.feedClients, m.feedMessages, m.feedSent, m.feedDropped, m.liveAlerts, m.liveEvicted, m.tailErrors, m.logins, m.actions)
	}
	return m
}
