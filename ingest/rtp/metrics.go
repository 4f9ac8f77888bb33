package rtp

import "github.com/prometheus/client_golang/prometheus"

// collector exposes the receiver's counters, which the read loops keep in
// per-loop atomics (uncontended on the packet path) and this sums at
// scrape time. No metric is labelled by camera or SSRC.
type collector struct{ r *Receiver }

type counterDesc struct {
	desc   *prometheus.Desc
	counts []int    // counter indexes, one per label value
	labels []string // reason label values, or nil
}

var (
	descPackets = counterDesc{desc: prometheus.NewDesc("citywatch_rtp_packets_total",
		"RTP datagrams received.", nil, nil), counts: []int{cPackets}}
	descBytes = counterDesc{desc: prometheus.NewDesc("citywatch_rtp_received_bytes_total",
		"Bytes of RTP datagrams received.", nil, nil), counts: []int{cBytes}}
	descDropped = counterDesc{desc: prometheus.NewDesc("citywatch_rtp_packets_dropped_total",
		"RTP datagrams dropped before reassembly, by reason (out_of_sequence: a stray far outside its stream's sequence numbers).", []string{"reason"}, nil),
		counts: []int{cMalformed, cUnknownSSRC, cMaxStreams, cStray},
		labels: []string{"malformed", "unknown_ssrc", "max_streams", "out_of_sequence"}}
	descLost = counterDesc{desc: prometheus.NewDesc("citywatch_rtp_packets_lost_total",
		"Packets lost in the streams per RFC 3550 (expected minus received, summed over check intervals with loss).", nil, nil),
		counts: []int{cLost}}
	descDup = counterDesc{desc: prometheus.NewDesc("citywatch_rtp_packets_duplicate_total",
		"Duplicate packets received (and not reassembled again).", nil, nil), counts: []int{cDuplicates}}
	descReordered = counterDesc{desc: prometheus.NewDesc("citywatch_rtp_packets_reordered_total",
		"Packets that arrived after a higher sequence number.", nil, nil), counts: []int{cReordered}}
	descRestarts = counterDesc{desc: prometheus.NewDesc("citywatch_rtp_stream_restarts_total",
		"Streams whose sequence numbering restarted (RFC 3550 A.1 re-synchronisation).", nil, nil), counts: []int{cRestarts}}
	descDocs = counterDesc{desc: prometheus.NewDesc("citywatch_rtp_documents_total",
		"ONVIF metadata documents reassembled.", nil, nil), counts: []int{cDocuments}}
	descDocsDropped = counterDesc{desc: prometheus.NewDesc("citywatch_rtp_documents_dropped_total",
		"Metadata documents (or their fragments) dropped, by reason.", []string{"reason"}, nil),
		counts: []int{cParseErrors, cTimeouts, cOverflows, cIncomplete, cLate, cBudget, cRestartDrops},
		labels: []string{"parse_error", "reassembly_timeout", "reassembly_overflow", "incomplete", "late_fragment",
			"memory_budget", "restart"}}
	descEvicted = counterDesc{desc: prometheus.NewDesc("citywatch_rtp_streams_evicted_total",
		"Streams forgotten after idle_timeout without packets (their stall reported).", nil, nil), counts: []int{cEvicted}}
	descDetections = counterDesc{desc: prometheus.NewDesc("citywatch_rtp_detections_total",
		"camera.detection events made from metadata documents.", nil, nil), counts: []int{cDetections}}
	descHealth = counterDesc{desc: prometheus.NewDesc("citywatch_rtp_health_changes_total",
		"camera.health events made from stream health transitions.", nil, nil), counts: []int{cHealth}}

	descStreams = prometheus.NewDesc("citywatch_rtp_streams",
		"Streams tracked.", nil, nil)
	descDegraded = prometheus.NewDesc("citywatch_rtp_streams_degraded",
		"Streams currently reported as video_loss (loss or stall).", nil, nil)
	descBuffered = prometheus.NewDesc("citywatch_rtp_buffered_bytes",
		"Bytes of reassembly and reorder buffers held by the streams (bounded by max_buffer_bytes).", nil, nil)

	counterDescs = []counterDesc{descPackets, descBytes, descDropped, descLost, descDup, descReordered,
		descRestarts, descDocs, descDocsDropped, descDetections, descHealth, descEvicted}
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range counterDescs {
		ch <- d.desc
	}
	ch <- descStreams
	ch <- descDegraded
	ch <- descBuffered
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	sum := c.r.sums()
	for _, d := range counterDescs {
		for i, k := range d.counts {
			if d.labels == nil {
				ch <- prometheus.MustNewConstMetric(d.desc, prometheus.CounterValue, float64(sum[k]))
			} else {
				ch <- prometheus.MustNewConstMetric(d.desc, prometheus.CounterValue, float64(sum[k]), d.labels[i])
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(descStreams, prometheus.GaugeValue, float64(c.r.nStreams.Load()))
	ch <- prometheus.MustNewConstMetric(descDegraded, prometheus.GaugeValue, float64(c.r.degraded.Load()))
	ch <- prometheus.MustNewConstMetric(descBuffered, prometheus.GaugeValue, float64(c.r.bufBytes.Load()))
}

func (r *Receiver) sums() [numCounters]uint64 {
	var sum [numCounters]uint64
	r.mu.Lock()
	ws := r.workers
	r.mu.Unlock()
	for _, w := range ws {
		for i := range sum {
			sum[i] += w.c[i].Load()
		}
	}
	return sum
}
