package ingest

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"time"

	"github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/kafkaio"
)

// Writer is the part of *kafka.Writer that ingest uses: a synchronous
// write of a batch that returns once every message is acknowledged.
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Ingest is the ingest role.
type Ingest struct {
	cfg     Config
	kc      kafkaio.Config
	key     []byte
	writer  Writer
	dedupe  *lru.Cache[idKey, struct{}]
	seeds   [2]maphash.Seed
	metrics *metrics
	kmet    *kafkaio.Metrics
	log     *slog.Logger
	now     func() time.Time

	eventsTopic string
	dlqTopic    string
	fuelTopic   string            // fuel purchases again, keyed by buyer pseudonym
	allowed     map[string]uint32 // full topic name → bit set of event.Type
	crashHook   func() error
}

// allowedTypes is which event types each raw topic carries
// (CONTRACT.md section 1); anything else on a topic is rejected.
var allowedTypes = map[string][]event.Type{
	kafkaio.TopicCamera:     {event.TypeCameraDetection, event.TypeCameraHealth, event.TypeDeviceHeartbeat},
	kafkaio.TopicCheckpoint: {event.TypeCheckpointPass, event.TypeDeviceHeartbeat},
	kafkaio.TopicFuel:       {event.TypeFuelPurchase, event.TypeDeviceHeartbeat},
	kafkaio.TopicDrone:      {event.TypeDroneTelemetry, event.TypeDroneDetection},
	kafkaio.TopicPatrol:     {event.TypePatrolPosition, event.TypePatrolStatus},
}

// New returns the ingest role. key is the pseudonym secret
// (CITYWATCH_PSEUDONYM_KEY); w writes the normalised events and DLQ records
// (nil: each worker builds its own from kc and closes it when it stops, so
// that workers do not queue behind one another's batches).
func New(cfg Config, kc kafkaio.Config, key []byte, w Writer, reg prometheus.Registerer, km *kafkaio.Metrics, log *slog.Logger) (*Ingest, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := event.NewPseudonymizer(key); err != nil {
		return nil, fmt.Errorf("cannot use pseudonym key: %w", err)
	}
	dedupe, err := lru.New[idKey, struct{}](cfg.DedupeSize)
	if err != nil {
		return nil, fmt.Errorf("cannot make dedupe cache: %w", err)
	}
	in := &Ingest{
		cfg:         cfg,
		kc:          kc,
		key:         key,
		writer:      w,
		dedupe:      dedupe,
		seeds:       [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		metrics:     newMetrics(reg),
		kmet:        km,
		log:         log.With("role", "ingest"),
		now:         time.Now,
		eventsTopic: kc.Topic(kafkaio.TopicEvents),
		dlqTopic:    kc.Topic(kafkaio.TopicDLQ),
		fuelTopic:   kc.Topic(kafkaio.TopicFuelEvents),
		allowed:     map[string]uint32{},
	}
	for topic, types := range allowedTypes {
		var bits uint32
		for _, t := range types {
			bits |= 1 << t
		}
		in.allowed[kc.Topic(topic)] = bits
	}
	in.metrics.dedupeCapacity.Set(float64(cfg.DedupeSize))
	return in, nil
}

// Topics returns the full names of the topics ingest consumes.
func (in *Ingest) Topics() []string { return in.kc.Topics(kafkaio.RawTopics...) }

// Group returns the consumer group.
func (in *Ingest) Group() string { return in.cfg.Group }

// SetCrashHook makes every worker stop without committing when f returns an
// error between a durable write and its commit. It is for failure tests.
func (in *Ingest) SetCrashHook(f func() error) { in.crashHook = f }

// Run consumes the raw topics with cfg.Workers group members until ctx is
// done. Stopping order: each member stops fetching, flushes and commits its
// open batch, then Run returns once all have and their own writers are
// closed; a writer given to New is the caller's to close afterwards.
func (in *Ingest) Run(ctx context.Context) error {
	var members []*kafkaio.Consumer
	var own []*kafkaio.PromptWriter
	defer func() {
		for _, w := range own {
			if err := w.Close(); err != nil {
				in.log.Warn("cannot close writer", "err", err)
			}
		}
	}()
	for range in.cfg.Workers {
		// Two handlers: one decodes while the other's batch is written.
		var hs [2]*worker
		for j := range hs {
			w, err := in.newWorker()
			if err != nil {
				return err
			}
			hs[j] = w
		}
		if in.writer == nil {
			// A flush is often of a few events (natural batching at a
			// quiet moment), and the member's flushes are one at a
			// time, as a PromptWriter needs.
			w := in.kc.NewPromptWriter(in.kmet, in.log)
			own = append(own, w)
			hs[0].writer, hs[1].writer = w, w
		}
		c := kafkaio.NewConsumer(in.kc, kafkaio.ConsumerConfig{
			Group:         in.cfg.Group,
			Topics:        in.Topics(),
			MaxWait:       in.cfg.MaxWait,
			FlushWhenIdle: true,
		}, in.kmet, in.log, hs[0], hs[1])
		if in.crashHook != nil {
			c.SetBeforeCommit(in.crashHook)
		}
		members = append(members, c)
	}
	return kafkaio.RunMembers(ctx, members)
}

// worker is one group member's Handler. It owns its decoder, pseudonymiser
// and output buffers; out's keys and values point into arena, which is
// reused only after a successful Flush.
type worker struct {
	in     *Ingest
	writer Writer
	dec    event.Decoder
	ev     event.Event
	pseud  *event.Pseudonymizer
	out    []kafka.Message
	arena  []byte
	// hdrs backs the headers of out's events, as arena backs their
	// bytes: one PublishedHeader each.
	hdrs []kafka.Header
	rej  event.Rejected
	// ids holds the ids of the events of the open batch. They go into
	// the shared dedupe cache only once the batch is durable (Flush): put
	// there at Add, they made a worker that was given the same input by a
	// rebalance drop it as seen and commit it while this one's write was
	// still failing, and the input was lost if the process then stopped.
	ids map[idKey]struct{}
	// received is when the message being added was taken.
	received time.Time

	counters map[counterKey]prometheus.Counter
}

type counterKey struct {
	topic string
	kind  uint8 // 0 event, 1 rejected, 2 duplicate
	t     event.Type
	code  event.Code
}

func (in *Ingest) newWorker() (*worker, error) {
	p, err := event.NewPseudonymizer(in.key)
	if err != nil {
		return nil, fmt.Errorf("cannot use pseudonym key: %w", err)
	}
	return &worker{
		in:       in,
		writer:   in.writer,
		dec:      event.Decoder{Now: in.now, MaxFuture: in.cfg.MaxFuture, MaxSize: in.cfg.MaxMessageBytes},
		pseud:    p,
		out:      make([]kafka.Message, 0, in.cfg.BatchSize),
		hdrs:     make([]kafka.Header, 0, in.cfg.BatchSize),
		ids:      make(map[idKey]struct{}, in.cfg.BatchSize),
		arena:    make([]byte, 0, 512*in.cfg.BatchSize),
		counters: map[counterKey]prometheus.Counter{},
	}, nil
}

func (w *worker) counter(k counterKey) prometheus.Counter {
	c, ok := w.counters[k]
	if ok {
		return c
	}
	m := w.in.metrics
	switch k.kind {
	case 0:
		c = m.events.WithLabelValues(k.topic, k.t.String())
	case 1:
		c = m.rejected.WithLabelValues(k.topic, string(k.code))
	default:
		c = m.duplicates.WithLabelValues(k.topic)
	}
	w.counters[k] = c
	return c
}

// Add implements kafkaio.Handler.
func (w *worker) Add(m *kafka.Message) {
	in := w.in
	e := &w.ev
	w.received = in.now()
	// m.Value was read for this message alone and does not change: the
	// event's strings share it until the next message (the dedupe cache
	// keeps hashes, the batch the encoded form).
	if err := w.dec.DecodeShared(m.Value, e); err != nil {
		w.reject(m, err, event.CodeOf(err))
		return
	}
	if in.allowed[m.Topic]&(1<<e.Type) == 0 {
		w.reject(m, fmt.Errorf("type %s is not carried by topic %s", e.Type, m.Topic), CodeWrongTopic)
		return
	}
	id := in.idKey(e.ID)
	if _, open := w.ids[id]; open || in.dedupe.Contains(id) {
		w.counter(counterKey{topic: m.Topic, kind: 2}).Inc()
		return
	}
	w.ids[id] = struct{}{}
	w.pseud.Apply(e)
	if d := w.received.Sub(e.Time); d >= 0 {
		in.metrics.delay.Observe(d.Seconds())
	}
	start := len(w.arena)
	w.arena = append(w.arena, e.DeviceID...)
	keyEnd := len(w.arena)
	w.arena = event.AppendJSON(w.arena, e)
	valueEnd := len(w.arena)
	var hdrs []kafka.Header
	if !m.Time.IsZero() {
		w.arena = kafkaio.AppendPublished(w.arena, m.Time)
		h := len(w.hdrs)
		w.hdrs = append(w.hdrs, kafka.Header{Key: kafkaio.PublishedHeader, Value: w.arena[valueEnd:len(w.arena):len(w.arena)]})
		hdrs = w.hdrs[h : h+1 : h+1]
	}
	w.out = append(w.out, kafka.Message{
		Topic:   in.eventsTopic,
		Key:     w.arena[start:keyEnd:keyEnd],
		Value:   w.arena[keyEnd:valueEnd:valueEnd],
		Headers: hdrs,
		Time:    w.received, // the record timestamp: when ingest accepted it
	})
	if e.Type == event.TypeFuelPurchase {
		// The same record on the buyers' topic (kafkaio.TopicFuelEvents),
		// written in the same batch and so before the raw message is
		// committed: the rules' restart reads the fuel rules' day there.
		ks := len(w.arena)
		w.arena = append(w.arena, e.BuyerPseudonym...)
		w.out = append(w.out, kafka.Message{
			Topic:   in.fuelTopic,
			Key:     w.arena[ks:len(w.arena):len(w.arena)],
			Value:   w.arena[keyEnd:valueEnd:valueEnd],
			Headers: hdrs,
			Time:    w.received,
		})
	}
	w.counter(counterKey{topic: m.Topic, kind: 0, t: e.Type}).Inc()
}

// idKey is an event id as remembered for duplicate detection: 128 bits of
// two independently seeded hashes rather than the id itself, so that
// remembering an id neither copies it nor keeps its message alive, and an
// entry costs the same whatever the id's length. A false duplicate needs a
// 128-bit collision.
type idKey [2]uint64

func (in *Ingest) idKey(id string) idKey {
	return idKey{maphash.String(in.seeds[0], id), maphash.String(in.seeds[1], id)}
}

// CodeWrongTopic rejects an event whose type the topic does not carry.
const CodeWrongTopic event.Code = "wrong_topic"

// reject turns m into a DLQ record. Personal fields are masked in the
// payload whatever the topic (a fuel purchase may arrive on the wrong one),
// and the payload is cut at MaxDLQPayload so that the record itself always
// fits in a Kafka message.
func (w *worker) reject(m *kafka.Message, err error, code event.Code) {
	in := w.in
	payload := event.RedactPersonal(m.Value)
	msg := err.Error()
	if len(payload) > in.cfg.MaxDLQPayload {
		msg = fmt.Sprintf("%s (payload cut to %d of %d bytes)", msg, in.cfg.MaxDLQPayload, len(payload))
		payload = payload[:in.cfg.MaxDLQPayload]
		// A cut may split an ID number; redact the cut again.
		payload = event.RedactPersonal(payload)
	}
	w.rej = event.Rejected{
		Topic:      m.Topic,
		Partition:  m.Partition,
		Offset:     m.Offset,
		Key:        m.Key,
		Error:      msg,
		Code:       code,
		ReceivedAt: w.received.UTC(),
		Payload:    payload,
	}
	start := len(w.arena)
	w.arena = append(w.arena, m.Key...)
	keyEnd := len(w.arena)
	w.arena = event.AppendRejectedJSON(w.arena, &w.rej)
	var key []byte
	if len(m.Key) > 0 {
		key = w.arena[start:keyEnd:keyEnd]
	}
	w.out = append(w.out, kafka.Message{
		Topic: in.dlqTopic,
		Key:   key,
		Value: w.arena[keyEnd:len(w.arena):len(w.arena)],
		Time:  w.received,
	})
	w.counter(counterKey{topic: m.Topic, kind: 1, code: code}).Inc()
	in.log.Debug("rejected input", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "code", code)
}

// Full implements kafkaio.Handler.
func (w *worker) Full() bool { return len(w.out) >= w.in.cfg.BatchSize }

// Flush implements kafkaio.Handler: it writes the batch's events and DLQ
// records and returns once Kafka has acknowledged all of them.
func (w *worker) Flush(ctx context.Context) error {
	if len(w.out) > 0 {
		start := time.Now()
		if err := w.writer.WriteMessages(ctx, w.out...); err != nil {
			w.in.kmet.ProduceError(w.in.eventsTopic)
			// What the brokers took is not written again by the retry.
			events, dlq, fuel := w.count()
			w.out = kafkaio.Unwritten(w.out, err)
			leftEvents, leftDLQ, leftFuel := w.count()
			w.produced(events-leftEvents, dlq-leftDLQ, fuel-leftFuel)
			return fmt.Errorf("cannot write normalised events: %w", kafkaio.WriteError(err))
		}
		w.in.metrics.writeSeconds.Observe(time.Since(start).Seconds())
		w.produced(w.count())
	}
	for id := range w.ids {
		w.in.dedupe.Add(id, struct{}{})
	}
	clear(w.ids)
	clear(w.out) // drop references into arena
	w.out = w.out[:0]
	clear(w.hdrs)
	w.hdrs = w.hdrs[:0]
	w.arena = w.arena[:0]
	w.in.metrics.dedupeEntries.Set(float64(w.in.dedupe.Len()))
	return nil
}

// count returns how many messages of the batch go to the events topic,
// to the DLQ and to the buyers' topic.
func (w *worker) count() (events, dlq, fuel int) {
	for i := range w.out {
		switch w.out[i].Topic {
		case w.in.dlqTopic:
			dlq++
		case w.in.fuelTopic:
			fuel++
		}
	}
	return len(w.out) - dlq - fuel, dlq, fuel
}

// produced counts messages written to the events topic, the DLQ and the
// buyers' topic.
func (w *worker) produced(events, dlq, fuel int) {
	if events > 0 {
		w.in.kmet.Produced(w.in.eventsTopic, events)
	}
	if dlq > 0 {
		w.in.kmet.Produced(w.in.dlqTopic, dlq)
	}
	if fuel > 0 {
		w.in.kmet.Produced(w.in.fuelTopic, fuel)
	}
}
