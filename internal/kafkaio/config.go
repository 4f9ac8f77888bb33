// Package kafkaio is citywatch's Kafka wiring: topic names, the reader and
// writer settings that kafka-go would otherwise default badly, topic
// creation, a batching consumer loop that commits only after its batch is
// durable, partition readers that fetch and parse record batches
// themselves (for restarts and for readers of a whole topic), and a lag
// monitor for consumer groups.
//
// Every role that touches Kafka builds its readers and writers here, so that
// the settings that matter for latency and durability live in one place.
package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// Topic names without the prefix (CONTRACT.md section 1).
const (
	TopicCamera     = "camera"
	TopicCheckpoint = "checkpoint"
	TopicFuel       = "fuel"
	TopicDrone      = "drone"
	TopicPatrol     = "patrol"
	TopicAlerts     = "alerts"
	TopicDispatches = "dispatches"
	TopicDLQ        = "dlq"
	// TopicEvents carries normalised, pseudonymised events from ingest to
	// the later stages, keyed by device_id.
	TopicEvents = "internal.events"
	// TopicFuelEvents carries the fuel purchases of TopicEvents again,
	// keyed by buyer pseudonym: the rules' restart reads a day of them
	// back (the fuel rules' window) without reading a day of every other
	// event too.
	TopicFuelEvents = "internal.events.fuel"
)

// RawTopics are the input topics that field devices write.
var RawTopics = []string{TopicCamera, TopicCheckpoint, TopicFuel, TopicDrone, TopicPatrol}

// Config is how citywatch reaches Kafka and how its clients behave.
type Config struct {
	// Brokers are the bootstrap brokers (CITYWATCH_KAFKA_BROKERS).
	Brokers []string `yaml:"brokers"`
	// TopicPrefix is prepended to every topic name (CITYWATCH_TOPIC_PREFIX).
	TopicPrefix string `yaml:"topic_prefix"`
	// Partitions is the partition count for topics citywatch creates.
	Partitions int `yaml:"partitions"`
	// ReplicationFactor is the replication factor for topics citywatch creates.
	ReplicationFactor int `yaml:"replication_factor"`

	// Reader settings. MaxWait is the longest the broker holds a fetch
	// while no data is there (see fetchMaxWait for the round trip).
	MinBytes          int           `yaml:"min_bytes"`
	MaxBytes          int           `yaml:"max_bytes"`
	MaxWait           time.Duration `yaml:"max_wait"`
	QueueCapacity     int           `yaml:"queue_capacity"`
	SessionTimeout    time.Duration `yaml:"session_timeout"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	RebalanceTimeout  time.Duration `yaml:"rebalance_timeout"`

	// Writer settings.
	BatchSize    int           `yaml:"batch_size"`
	BatchBytes   int64         `yaml:"batch_bytes"`
	BatchTimeout time.Duration `yaml:"batch_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	MaxAttempts  int           `yaml:"max_attempts"`
	// Compression of produced batches: none, gzip, snappy, lz4 or zstd.
	// Compression costs CPU on both ends and pays off on a real network;
	// the demo's in-process broker has none to save.
	Compression string `yaml:"compression"`

	// TLS and SASL secure the connections of every client built from the
	// Config (Dialer, Transport); both off means plaintext, which
	// citywatch run refuses off loopback unless told (CONTRACT.md
	// section 9).
	TLS  TLS  `yaml:"tls"`
	SASL SASL `yaml:"sasl"`
}

// SetDefaults fills every zero field with its default. The defaults are
// chosen for latency and durability, not kafka-go's: a writer waits at
// most 250 µs to fill a batch (not 1 s: citywatch hands the writer whole
// batches, so waiting for more only adds latency) and waits for all in-sync
// replicas (not none); readers commit explicitly (see Consumer).
func (c *Config) SetDefaults() {
	if c.TopicPrefix == "" {
		c.TopicPrefix = "citywatch."
	}
	if c.Partitions == 0 {
		c.Partitions = 8
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = 1
	}
	if c.MinBytes == 0 {
		c.MinBytes = 1
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 16 << 20
	}
	if c.MaxWait == 0 {
		c.MaxWait = 100 * time.Millisecond
	}
	if c.QueueCapacity == 0 {
		c.QueueCapacity = 1024
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 30 * time.Second
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 3 * time.Second
	}
	if c.RebalanceTimeout == 0 {
		c.RebalanceTimeout = 30 * time.Second
	}
	if c.BatchSize == 0 {
		// kafka-go gives every partition's batch room for BatchSize
		// messages up front (152 bytes each), however few it carries.
		// At 10,000 events/s, 256 rather than 2,000 took the median of
		// five paired runs of produced→alert from p50 8.1 ms and p99
		// 28.5 ms to 4.5 ms and 22.9 ms, and left the end-to-end rate
		// at 100,000/s offered unchanged (BENCHMARKS.md).
		c.BatchSize = 256
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = 4 << 20
	}
	if c.BatchTimeout == 0 {
		c.BatchTimeout = 250 * time.Microsecond
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 5
	}
	if c.Compression == "" {
		c.Compression = "lz4"
	}
}

// Validate reports the first field that is not usable.
func (c Config) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("kafka.brokers: at least one broker is needed")
	case c.Partitions < 1:
		return fmt.Errorf("kafka.partitions: must be ≥ 1, got %d", c.Partitions)
	case c.ReplicationFactor < 1:
		return fmt.Errorf("kafka.replication_factor: must be ≥ 1, got %d", c.ReplicationFactor)
	case c.MinBytes < 1 || c.MaxBytes < c.MinBytes:
		return fmt.Errorf("kafka.max_bytes: must be ≥ min_bytes ≥ 1, got %d and %d", c.MaxBytes, c.MinBytes)
	case c.MaxWait <= 0:
		return errors.New("kafka.max_wait: must be positive")
	case c.QueueCapacity < 1:
		return errors.New("kafka.queue_capacity: must be ≥ 1")
	case c.BatchSize < 1:
		return errors.New("kafka.batch_size: must be ≥ 1")
	case c.BatchTimeout <= 0:
		return errors.New("kafka.batch_timeout: must be positive")
	case c.MaxAttempts < 1:
		return errors.New("kafka.max_attempts: must be ≥ 1")
	}
	if _, ok := compressions[c.Compression]; !ok {
		return fmt.Errorf("kafka.compression: %q is not none, gzip, snappy, lz4 or zstd", c.Compression)
	}
	for _, b := range c.Brokers {
		if strings.TrimSpace(b) == "" || !strings.Contains(b, ":") {
			return fmt.Errorf("kafka.brokers: %q is not host:port", b)
		}
	}
	return c.validateSecurity()
}

// Topic returns the full name of topic name (for example "camera" →
// "citywatch.camera").
func (c Config) Topic(name string) string { return c.TopicPrefix + name }

// Topics returns the full names of names.
func (c Config) Topics(names ...string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = c.Topic(n)
	}
	return out
}

// NewReader returns a consumer-group reader of topics with every setting
// explicit. CommitInterval is 0, so CommitMessages commits synchronously:
// callers commit once per batch, after the batch's effect is durable, and
// never use ReadMessage (which would commit before processing).
func (c Config) NewReader(group string, topics []string) *kafka.Reader {
	return kafka.NewReader(c.readerConfig(group, topics))
}

func (c Config) readerConfig(group string, topics []string) kafka.ReaderConfig {
	return kafka.ReaderConfig{
		Brokers:                c.Brokers,
		Dialer:                 c.Dialer(),
		GroupID:                group,
		GroupTopics:            topics,
		QueueCapacity:          c.QueueCapacity,
		MinBytes:               c.MinBytes,
		MaxBytes:               c.MaxBytes,
		MaxWait:                c.fetchMaxWait(),
		ReadBatchTimeout:       10 * time.Second,
		ReadLagInterval:        -1, // group lag is measured by LagMonitor
		HeartbeatInterval:      c.HeartbeatInterval,
		CommitInterval:         0,
		PartitionWatchInterval: 5 * time.Second,
		WatchPartitionChanges:  true,
		SessionTimeout:         c.SessionTimeout,
		RebalanceTimeout:       c.RebalanceTimeout,
		JoinGroupBackoff:       time.Second,
		StartOffset:            kafka.FirstOffset, // a new group must not skip what is already there
		ReadBackoffMin:         50 * time.Millisecond,
		ReadBackoffMax:         time.Second,
		IsolationLevel:         kafka.ReadCommitted,
		MaxAttempts:            c.MaxAttempts,
	}
}

// NewPartitionReader returns a reader of one partition of topic without a
// consumer group, positioned by the caller (SetOffset): for consumers
// that keep their own position, such as the rules role's shards, which
// read the whole input and rebuild from it.
func (c Config) NewPartitionReader(topic string, partition int) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:          c.Brokers,
		Dialer:           c.Dialer(),
		Topic:            topic,
		Partition:        partition,
		QueueCapacity:    c.QueueCapacity,
		MinBytes:         c.MinBytes,
		MaxBytes:         c.MaxBytes,
		MaxWait:          c.fetchMaxWait(),
		ReadBatchTimeout: 10 * time.Second,
		ReadLagInterval:  -1,
		ReadBackoffMin:   50 * time.Millisecond,
		ReadBackoffMax:   time.Second,
		IsolationLevel:   kafka.ReadCommitted,
		MaxAttempts:      c.MaxAttempts,
	})
}

// fetchRTT is the time a fetch's answer may take to come back on top of
// the broker's wait: kafka-go's own allowance (its defaultRTT).
const fetchRTT = time.Second

// fetchMaxWait returns the MaxWait to give a kafka-go reader so that the
// broker holds a fetch for MaxWait and the answer has fetchRTT more to
// arrive. kafka-go uses a reader's MaxWait as the deadline of the whole
// round trip and asks the broker to wait that long less 1 s, or less a
// quarter below 1 s: given MaxWait itself (100 ms), a broker answering an
// idle fetch more than 25 ms late timed the fetch out, the reader dropped
// its connection and dialled again, and a broker slower than 100 ms per
// request stalled every reader for good, with no error surfacing.
func (c Config) fetchMaxWait() time.Duration { return c.MaxWait + fetchRTT }

// NewWriter returns a synchronous writer that takes the topic from each
// message, partitions by key the way the Java client does (murmur2), waits
// for all in-sync replicas, and sends a batch after at most BatchTimeout.
func (c Config) NewWriter() *kafka.Writer {
	return &kafka.Writer{
		Addr:            kafka.TCP(c.Brokers...),
		Transport:       c.Transport(),
		Balancer:        &kafka.Murmur2Balancer{},
		MaxAttempts:     c.MaxAttempts,
		WriteBackoffMin: 50 * time.Millisecond,
		WriteBackoffMax: time.Second,
		BatchSize:       c.BatchSize,
		BatchBytes:      c.BatchBytes,
		BatchTimeout:    c.BatchTimeout,
		ReadTimeout:     c.WriteTimeout,
		WriteTimeout:    c.WriteTimeout,
		RequiredAcks:    kafka.RequireAll,
		Async:           false,
		Compression:     compressions[c.Compression],
	}
}

// Client returns an admin client for the brokers.
func (c Config) Client() *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 10 * time.Second, Transport: c.Transport()}
}

// Ping asks the brokers for cluster metadata: nil when one answers. The
// error names the brokers and how they were reached, because a broker
// that refuses a TLS handshake or a SASL login often just closes the
// connection, and kafka-go then reports only an EOF.
func (c Config) Ping(ctx context.Context) error {
	if _, err := c.Client().Metadata(ctx, &kafka.MetadataRequest{}); err != nil {
		return fmt.Errorf("cannot reach Kafka at %s over %s: %w", strings.Join(c.Brokers, ","), c.describeSecurity(), err)
	}
	return nil
}

var compressions = map[string]kafka.Compression{
	"none":   0,
	"gzip":   kafka.Gzip,
	"snappy": kafka.Snappy,
	"lz4":    kafka.Lz4,
	"zstd":   kafka.Zstd,
}
