package ingest

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	events         *prometheus.CounterVec
	rejected       *prometheus.CounterVec
	duplicates     *prometheus.CounterVec
	dedupeEntries  prometheus.Gauge
	dedupeCapacity prometheus.Gauge
	delay          prometheus.Histogram
	writeSeconds   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_ingest_events_total",
			Help: "Valid events passed on to the later stages, by raw topic and event type.",
		}, []string{"topic", "type"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_ingest_rejected_total",
			Help: "Messages sent to the DLQ, by raw topic and reason.",
		}, []string{"topic", "reason"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citywatch_ingest_duplicates_dropped_total",
			Help: "Events dropped because their id was seen recently, by raw topic.",
		}, []string{"topic"}),
		dedupeEntries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "citywatch_ingest_dedupe_entries",
			Help: "Event ids remembered for duplicate detection.",
		}),
		dedupeCapacity: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "citywatch_ingest_dedupe_capacity",
			Help: "The most event ids remembered for duplicate detection.",
		}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "citywatch_ingest_event_delay_seconds",
			Help:    "Time from an event's device time to its ingest.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300},
		}),
		writeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "citywatch_ingest_write_seconds",
			Help:    "Time to write one batch of normalised events to Kafka.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	reg.MustRegister(m.events, m.rejected, m.duplicates, m.dedupeEntries, m.dedupeCapacity, m.delay, m.writeSeconds)
	return m
}
