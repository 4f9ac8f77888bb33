// Package gateway is citywatch's field gateway (`citywatch gateway`,
// CONTRACT.md sections 7 and 8): it runs the RTP metadata receiver
// (package ingest/rtp) and the GA/T 1400 HTTP server (package
// ingest/viid) and publishes what they make to the device topics —
// camera detections, health and heartbeats to citywatch.camera,
// checkpoint passes and checkpoint heartbeats to citywatch.checkpoint,
// keyed by device_id — as raw device messages that ingest validates like
// any other.
//
// Between the receivers and Kafka sits one bounded buffer. A GA/T 1400
// record is acknowledged (StatusCode 0) only after it is written with
// acks from all in-sync replicas, so a gateway restart loses nothing that
// was acknowledged; while the buffer is full the device is answered 503
// with Retry-After. RTP events have nobody to retry them: when the buffer
// is full they are dropped and counted (citywatch_gateway_dropped_total).
// Event ids are deterministic (SSRC, RTP timestamp and index; GA/T 1400
// record ids), so resends are deduplicated downstream.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/ingest/rtp"
	"citywatch/ingest/viid"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
)

// Gateway is the RTP and GA/T 1400 gateway.
type Gateway struct {
	cfg  Config
	kc   kafkaio.Config
	city *city.City
	log  *slog.Logger
	loc  *time.Location

	pub  *publisher
	rtp  *rtp.Receiver
	viid *viid.Server
	srv  *http.Server

	cameraTopic, checkpointTopic string

	mu sync.Mutex
	ln net.Listener
}

// New builds the gateway; nothing runs until Run. reg receives the
// gateway's metrics and, when it is also a prometheus.Gatherer, is served
// on /metrics.
func New(cfg Config, kc kafkaio.Config, c *city.City, reg prometheus.Registerer, km *kafkaio.Metrics, log *slog.Logger) (*Gateway, error) {
	return NewWithWriter(cfg, kc, kc.NewWriter(), c, reg, km, log)
}

// NewWithWriter is New with the Kafka writer given (tests use a writer
// that fails, to stand for an unavailable cluster). The gateway closes w.
func NewWithWriter(cfg Config, kc kafkaio.Config, w Writer, c *city.City, reg prometheus.Registerer, km *kafkaio.Metrics, log *slog.Logger) (*Gateway, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	loc := cfg.Location
	if loc == nil {
		loc = city.Location // Asia/Shanghai: UTC+8 all year
		if l, err := time.LoadLocation("Asia/Shanghai"); err == nil {
			loc = l
		}
	}
	g := &Gateway{
		cfg: cfg, kc: kc, city: c, log: log.With("role", "gateway"), loc: loc,
		cameraTopic: kc.Topic(kafkaio.TopicCamera), checkpointTopic: kc.Topic(kafkaio.TopicCheckpoint),
	}
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "citywatch_gateway_dropped_total",
		Help: "Events the gateway made but did not write, by reason (buffer_full, kafka_unavailable, stopping).",
	}, []string{"reason"})
	buffered := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "citywatch_gateway_buffer_messages",
		Help: "Events waiting in the gateway's buffer to be written to Kafka.",
	}, func() float64 { return float64(len(g.pub.q)) })
	capacity := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "citywatch_gateway_buffer_capacity_messages",
		Help: "The most events the gateway's buffer holds.",
	})
	capacity.Set(float64(cfg.BufferSize))
	for _, m := range []prometheus.Collector{dropped, buffered, capacity} {
		if err := reg.Register(m); err != nil {
			return nil, fmt.Errorf("cannot register gateway metrics: %w", err)
		}
	}
	g.pub = newPublisher(w, cfg.BufferSize, cfg.BatchSize, km, dropped, g.log)

	var err error
	reg2 := rtp.NewRegistry(c)
	if reg2.Collisions > 0 {
		g.log.Warn("cameras left out of the RTP registry: their ids share an SSRC", "cameras", reg2.Collisions)
	}
	if g.rtp, err = rtp.New(cfg.RTP, reg2, g.emitRTP, reg, g.log); err != nil {
		return nil, err
	}
	if g.viid, err = viid.New(cfg.VIID, c, loc, publishFunc(g.publishVIID), reg, g.log); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	g.viid.Register(mux)
	if gat, ok := reg.(prometheus.Gatherer); ok {
		mux.Handle("GET /metrics", promhttp.HandlerFor(gat, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /healthz", g.healthz)
	mux.HandleFunc("GET /rtp/streams", g.rtpStreams)
	// The timeouts bound what one connection holds: headers within 10 s,
	// the whole request (an 8 MiB body at 140 kB/s) within a minute, an
	// idle keep-alive two minutes. There is no WriteTimeout: a push waits
	// up to gateway.viid.ack_timeout for Kafka before its small answer,
	// and gateway.viid.max_in_flight bounds the requests doing so. GA/T
	// 1400 headers are small; 64 KiB leaves room for a Digest header and
	// cookies of proxies.
	g.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	return g, nil
}

type publishFunc func(ctx context.Context, evs []event.Event) error

func (f publishFunc) Publish(ctx context.Context, evs []event.Event) error { return f(ctx, evs) }

// topic returns the device topic of e: checkpoint events and checkpoints'
// heartbeats go to the checkpoint topic, the rest to the camera topic.
func (g *Gateway) topic(e *event.Event) string {
	switch e.Type {
	case event.TypeCheckpointPass:
		return g.checkpointTopic
	case event.TypeDeviceHeartbeat:
		if d := g.city.Device(e.DeviceID); d != nil && d.Kind == city.KindCheckpoint {
			return g.checkpointTopic
		}
	}
	return g.cameraTopic
}

func (g *Gateway) message(e *event.Event) kafka.Message {
	return kafka.Message{Topic: g.topic(e), Key: []byte(e.DeviceID), Value: AppendRaw(nil, e, g.loc)}
}

// emitRTP queues an RTP event without blocking.
func (g *Gateway) emitRTP(e *event.Event) bool {
	return g.pub.offer(g.message(e))
}

// publishVIID writes the events of one GA/T 1400 request and waits.
func (g *Gateway) publishVIID(ctx context.Context, evs []event.Event) error {
	msgs := make([]kafka.Message, len(evs))
	for i := range evs {
		msgs[i] = g.message(&evs[i])
	}
	return g.pub.publish(ctx, msgs)
}

func (g *Gateway) healthz(w http.ResponseWriter, _ *http.Request) {
	if len(g.pub.q) >= cap(g.pub.q) {
		http.Error(w, "buffer full: Kafka is not keeping up", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// rtpStreams answers the RFC 3550 report of every RTP stream as JSON,
// sorted by camera; ?state=degraded (or stalled, ok) keeps those in that
// state. It is where an operator looks for which camera's stream is bad:
// the metrics aggregate over cameras.
func (g *Gateway) rtpStreams(w http.ResponseWriter, r *http.Request) {
	all := g.rtp.Streams()
	if st := r.URL.Query().Get("state"); st != "" {
		if st != rtp.StateOK && st != rtp.StateDegraded && st != rtp.StateStalled {
			http.Error(w, "state: ok, degraded or stalled", http.StatusBadRequest)
			return
		}
		kept := all[:0]
		for _, s := range all {
			if s.State == st {
				kept = append(kept, s)
			}
		}
		all = kept
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(struct {
		Streams []rtp.StreamReport `json:"streams"`
	}{all}); err != nil {
		g.log.Debug("cannot answer the RTP streams", "err", err)
	}
}

// Listen opens the UDP sockets and the HTTP listener, once; Run calls it
// if the caller did not. Tests call it to learn the addresses.
func (g *Gateway) Listen(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ln != nil {
		return nil
	}
	if err := g.rtp.Listen(ctx); err != nil {
		return err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", g.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", g.cfg.HTTPAddr, err)
	}
	g.ln = ln
	return nil
}

// HTTPAddr returns the HTTP server's address after Listen.
func (g *Gateway) HTTPAddr() net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ln == nil {
		return nil
	}
	return g.ln.Addr()
}

// RTPAddr returns the RTP sockets' address after Listen.
func (g *Gateway) RTPAddr() net.Addr { return g.rtp.LocalAddr() }

// RTP returns the RTP receiver, for its statistics.
func (g *Gateway) RTP() *rtp.Receiver { return g.rtp }

// Run runs the gateway until ctx is done or a part fails. Stop order:
// 1. intake stops: the RTP sockets close and their loops are waited for,
// then the HTTP server shuts down, answering the requests in flight
// (their records are still being written); 2. the buffer is flushed to
// Kafka, for at most ShutdownTimeout, after which what is left fails
// (and RTP events are counted as dropped); 3. the writer is closed;
// 4. every goroutine has returned when Run returns.
func (g *Gateway) Run(ctx context.Context) error {
	if err := g.Listen(ctx); err != nil {
		g.pub.w.Close()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	writeCtx, cancelWrite := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWrite()
	var writers sync.WaitGroup
	for range g.cfg.Writers {
		writers.Go(func() { g.pub.run(writeCtx) })
	}

	var rtpErr, httpErr error
	var intake sync.WaitGroup
	rtpCtx, stopRTP := context.WithCancel(ctx)
	defer stopRTP()
	intake.Go(func() {
		if err := g.rtp.Run(rtpCtx); err != nil {
			rtpErr = fmt.Errorf("rtp: %w", err)
			cancel()
		}
	})
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		if err := g.srv.Serve(g.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			httpErr = fmt.Errorf("http: %w", err)
			cancel()
		}
	}()
	g.log.Info("gateway running", "http", g.ln.Addr().String(), "rtp", g.rtp.LocalAddr().String())

	<-ctx.Done()
	// 1. Stop intake.
	stopRTP()
	intake.Wait()
	shCtx, cancelSh := context.WithTimeout(context.Background(), g.cfg.ShutdownTimeout)
	defer cancelSh()
	if err := g.srv.Shutdown(shCtx); err != nil {
		g.log.Warn("cannot shut the HTTP server down in time", "err", err)
		g.srv.Close()
	}
	<-httpDone
	// 2. Flush.
	g.pub.close()
	flushed := make(chan struct{})
	go func() { writers.Wait(); close(flushed) }()
	select {
	case <-flushed:
	case <-shCtx.Done():
		g.log.Warn("cannot flush the buffer in time; dropping the rest", "left", len(g.pub.q))
		cancelWrite()
		<-flushed
	}
	// 3. Close the writer.
	var closeErr error
	if err := g.pub.w.Close(); err != nil {
		closeErr = fmt.Errorf("cannot close Kafka writer: %w", err)
	}
	return errors.Join(rtpErr, httpErr, closeErr)
}
