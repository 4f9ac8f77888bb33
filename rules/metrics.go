package rules

import (
	"github.com/prometheus/client_golang/prometheus"

	"citywatch/event"
)

// Metrics are the rule engine's Prometheus metrics. Labels hold rule ids
// and statuses only, never keys (plates, pseudonyms, devices).
type Metrics struct {
	late         prometheus.Counter
	watermark    prometheus.Gauge
	alerts       *prometheus.CounterVec
	keys         *prometheus.GaugeVec
	bytes        *prometheus.GaugeVec
	open         *prometheus.GaugeVec
	evicted      *prometheus.CounterVec
	filterErrors *prometheus.CounterVec
	reloads      *prometheus.CounterVec
	reloadOK     prometheus.Gauge

	// The role's (Role), beside the engine's.
	replayed       prometheus.Counter
	replaySkipped  prometheus.Counter
	inputLag       *prometheus.GaugeVec
	upstreamLag    prometheus.Gauge
	stalled        prometheus.Gauge
	shards         prometheus.Gauge
	shardRecords   prometheus.Counter
	restoreDropped prometheus.Counter
	undecodable    prometheus.Counter
}

// NewMetrics registers the rule engine's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		late: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citywatch_rules_late_events_total",
			Help: "Events older than the watermark (highest event time minus the allowed lateness); they raise no alert.",
		}),
		watermark: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "citywatch_rules_watermark_seconds",
			Help: "The rule engine's watermark, Unix seconds of event time.",
		}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_rules_alerts_total",
			Help: "Alert messages emitted, by rule and status.",
		}, []string{"rule", "status"}),
		keys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "citywatch_rules_state_keys",
			Help: "Keys held in the state of a rule (plates, buyers, devices, pairs, open alerts).",
		}, []string{"rule"}),
		bytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "citywatch_rules_state_bytes",
			Help: "Estimated memory of the state of a rule.",
		}, []string{"rule"}),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "citywatch_rules_open_alerts",
			Help: "Open (firing or updated, not resolved) alerts of a rule.",
		}, []string{"rule"}),
		evicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_rules_state_evicted_total",
			Help: "Keys evicted from a full state table of a rule (rules.max_keys).",
		}, []string{"rule"}),
		filterErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_rules_filter_errors_total",
			Help: "Filter evaluations that failed and counted as false, by rule.",
		}, []string{"rule"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_rules_reloads_total",
			Help: "Reloads of the rule file and lists, by result (ok, error).",
		}, []string{"result"}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "citywatch_rules_last_reload_successful",
			Help: "1 when the last reload of the rule file and lists succeeded, 0 when the running rules are older than the files.",
		}),
	}
	m.replayed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "citywatch_rules_replayed_events_total",
		Help: "Input events replayed on start to rebuild the rules' state.",
	})
	m.replaySkipped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "citywatch_rules_replay_skipped_total",
		Help: "Input records a start's replay passed over undecoded: older than any rule that reads their type looks back.",
	})
	m.restoreDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "citywatch_rules_restore_dropped_total",
		Help: "Alert messages recomputed after a start that were already on the alerts topic, and not written again.",
	})
	m.undecodable = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "citywatch_rules_undecodable_dropped_total",
		Help: "Messages of the internal events topic, or of the rules' repartition topic, that could not be decoded and were skipped.",
	})
	m.inputLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "citywatch_rules_input_lag_messages",
		Help: "Messages of the rules' repartition topic behind the newest one read, by partition (shard), in a scaled-out rules role, whose shards commit no offsets for the lag monitor to compare (its forwarders' lag on the events topic is the group's).",
	}, []string{"partition"})
	m.upstreamLag = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "citywatch_rules_upstream_lag_messages",
		Help: "Raw messages the upstream group (ingest) has not committed; while above 0 the clock does not move the rules' watermark past the newest event.",
	})
	m.stalled = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "citywatch_rules_stalled_partitions",
		Help: "Partitions of the raw topics (ingest's group) or of the events topic (another rules member) with messages that have not moved for a tick, or that still catch up after such a stall, or whose drained backlog the rules have not read yet; they hold the watermark at their first waiting message.",
	})
	m.shardRecords = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "citywatch_rules_shard_records_total",
		Help: "Records of the rules' repartition topic this process's shards have read, forwarded events and markers, replays included.",
	})
	m.shards = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "citywatch_rules_shards_owned",
		Help: "Shards of the rules' keys this process owns in a scaled-out rules role.",
	})
	reg.MustRegister(m.late, m.watermark, m.alerts, m.keys, m.bytes, m.open,
		m.evicted, m.filterErrors, m.reloads, m.reloadOK, m.replayed, m.replaySkipped, m.restoreDropped, m.undecodable,
		m.inputLag, m.upstreamLag, m.stalled, m.shards, m.shardRecords)
	m.reloadOK.Set(1)
	return m
}

// ruleMetrics are one rule's children, resolved once so that the hot path
// does not look labels up.
type ruleMetrics struct {
	firing, updated, resolved prometheus.Counter
	keys, bytes, open         prometheus.Gauge
	evicted, filterErrors     prometheus.Counter
}

func (m *Metrics) forRule(id string) *ruleMetrics {
	return &ruleMetrics{
		firing:       m.alerts.WithLabelValues(id, string(event.AlertFiring)),
		updated:      m.alerts.WithLabelValues(id, string(event.AlertUpdated)),
		resolved:     m.alerts.WithLabelValues(id, string(event.AlertResolved)),
		keys:         m.keys.WithLabelValues(id),
		bytes:        m.bytes.WithLabelValues(id),
		open:         m.open.WithLabelValues(id),
		evicted:      m.evicted.WithLabelValues(id),
		filterErrors: m.filterErrors.WithLabelValues(id),
	}
}

// dropRule removes the gauges of a rule that is no longer running.
func (m *Metrics) dropRule(id string) {
	m.keys.DeleteLabelValues(id)
	m.bytes.DeleteLabelValues(id)
	m.open.DeleteLabelValues(id)
}

func (rm *ruleMetrics) alert(s event.AlertStatus) {
	switch s {
	case event.AlertFiring:
		rm.firing.Inc()
	case event.AlertUpdated:
		rm.updated.Inc()
	case event.AlertResolved:
		rm.resolved.Inc()
	}
}

// reloaded records the result of a reload.
func (m *Metrics) reloaded(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.reloads.WithLabelValues("error").Inc()
		m.reloadOK.Set(0)
		return
	}
	m.reloads.WithLabelValues("ok").Inc()
	m.reloadOK.Set(1)
}
