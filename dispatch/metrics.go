package dispatch

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the dispatcher's metrics. Labels hold only bounded values:
// statuses, reasons, tiers and the city's nine district names; never unit,
// alert or dispatch ids.
type Metrics struct {
	dispatches    *prometheus.CounterVec
	flagged       *prometheus.CounterVec
	unknown       prometheus.Counter
	ignored       *prometheus.CounterVec
	skipped       *prometheus.CounterVec
	escalations   prometheus.Counter
	breaches      *prometheus.CounterVec
	uncovered     *prometheus.GaugeVec
	units         *prometheus.GaugeVec
	openAlerts    prometheus.Gauge
	undecodable   *prometheus.CounterVec
	unitsDropped  prometheus.Counter
	alertDelay    *prometheus.HistogramVec
	assignDelay   *prometheus.HistogramVec
	acceptDelay   *prometheus.HistogramVec
	onSceneDelay  *prometheus.HistogramVec
	assignLatency prometheus.Histogram
	restored      *prometheus.CounterVec
}

// responseBuckets span a few hundred milliseconds (detection) to half an
// hour (a remote scene), with the tier limits 60, 180 and 300 s as bounds.
var responseBuckets = []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600, 900, 1800}

// NewMetrics returns the dispatcher's metrics registered with reg (none
// when reg is nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	tierDistrict := []string{"tier", "district"}
	hist := func(name, help string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: responseBuckets}, tierDistrict)
	}
	m := &Metrics{
		dispatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_dispatch_messages_total",
			Help: "Dispatch messages emitted, by status.",
		}, []string{"status"}),
		flagged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_dispatch_unit_reports_flagged_total",
			Help: "Patrol position reports not trusted, by reason (future: ahead of the clock; jump: impossible speed).",
		}, []string{"reason"}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citywatch_dispatch_unknown_answers_dropped_total",
			Help: "patrol.status answers for a dispatch id the dispatcher does not know (or of another unit), ignored.",
		}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_dispatch_answers_ignored_total",
			Help: "patrol.status answers that change nothing, by reason (duplicate, out_of_order, after_end).",
		}, []string{"reason"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_dispatch_alerts_skipped_total",
			Help: "Firing alerts that got no unit, by reason (rule, district, no_location, too_old).",
		}, []string{"reason"}),
		escalations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citywatch_dispatch_escalations_total",
			Help: "Alerts no unit could reach within their tier, escalated to the command centre.",
		}),
		breaches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_dispatch_sla_breaches_total",
			Help: "Alerts with no unit on scene within their tier, by tier.",
		}, []string{"tier"}),
		uncovered: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "citywatch_dispatch_circles_uncovered",
			Help: "Circles whose centre no available unit with a fresh position can reach within the tier, by tier.",
		}, []string{"tier"}),
		units: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "citywatch_dispatch_units",
			Help: "Patrol units known, by state (available, dispatched, busy, off_duty, stale).",
		}, []string{"state"}),
		openAlerts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "citywatch_dispatch_open_alerts",
			Help: "Alerts with dispatches in progress.",
		}),
		undecodable: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_dispatch_undecodable_dropped_total",
			Help: "Messages that could not be decoded and were skipped, by stream.",
		}, []string{"stream"}),
		unitsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citywatch_dispatch_units_dropped_total",
			Help: "Position reports of new units dropped because the registry is full.",
		}),
		alertDelay:   hist("citywatch_dispatch_alert_delay_seconds", "Sensor event time to the alert being raised."),
		assignDelay:  hist("citywatch_dispatch_assign_delay_seconds", "Sensor event time to the first unit assigned."),
		acceptDelay:  hist("citywatch_dispatch_accept_delay_seconds", "Sensor event time to the first unit accepting."),
		onSceneDelay: hist("citywatch_dispatch_on_scene_delay_seconds", "Sensor event time to the first unit on scene."),
		assignLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "citywatch_dispatch_rank_assign_seconds",
			Help:    "Time to rank the units and decide the assignments of one alert.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10),
		}),
		restored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_dispatch_restored_messages_total",
			Help: "Messages read back on a start to rebuild the state, by stream.",
		}, []string{"stream"}),
	}
	if reg != nil {
		reg.MustRegister(m.dispatches, m.flagged, m.unknown, m.ignored, m.skipped, m.escalations, m.breaches,
			m.uncovered, m.units, m.openAlerts, m.undecodable, m.unitsDropped,
			m.alertDelay, m.assignDelay, m.acceptDelay, m.onSceneDelay, m.assignLatency, m.restored)
	}
	return m
}
