// Package ingest is the first stage of citywatch's data flow: it consumes
// the raw device topics as one consumer group, decodes and validates every
// message against the wire contract, drops duplicate event ids,
// pseudonymises fuel buyers, and writes the normalised events to the
// internal events topic for the rules, dispatch and sink stages. Input that
// is not valid goes to the DLQ topic with its reason; it never stops a
// partition and never loses the messages around it.
//
// Raw personal data (fuel buyers' ID numbers and names) does not leave this
// package: what it writes holds only the keyed pseudonym and masked forms.
package ingest

import (
	"errors"
	"fmt"
	"time"
)

// Config is the ingest role's configuration.
type Config struct {
	// Group is the Kafka consumer group of the raw topics.
	Group string `yaml:"group"`
	// Workers is the number of group members in this process; each owns
	// a share of the partitions and a core's worth of decoding.
	Workers int `yaml:"workers"`
	// BatchSize is how many input messages make a batch, and MaxWait how
	// long the first of them may wait for the rest.
	BatchSize int           `yaml:"batch_size"`
	MaxWait   time.Duration `yaml:"max_wait"`
	// DedupeSize bounds the number of recent event ids remembered to drop
	// resent events (the storage layer deduplicates beyond it).
	DedupeSize int `yaml:"dedupe_size"`
	// MaxMessageBytes is the largest message accepted; larger ones go to
	// the DLQ with a truncated payload.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// MaxFuture is how far ahead of the receiver's clock an event time may
	// be (CONTRACT.md: 5 minutes).
	MaxFuture time.Duration `yaml:"max_future"`
	// MaxDLQPayload bounds the payload kept in a DLQ record.
	MaxDLQPayload int `yaml:"max_dlq_payload"`
}

// SetDefaults fills zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.Group == "" {
		c.Group = "citywatch-ingest"
	}
	if c.Workers == 0 {
		c.Workers = 2
	}
	if c.BatchSize == 0 {
		c.BatchSize = 2000
	}
	if c.MaxWait == 0 {
		c.MaxWait = 5 * time.Millisecond
	}
	if c.DedupeSize == 0 {
		c.DedupeSize = 500_000
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 64 << 10
	}
	if c.MaxFuture == 0 {
		c.MaxFuture = 5 * time.Minute
	}
	if c.MaxDLQPayload == 0 {
		c.MaxDLQPayload = 64 << 10
	}
}

// Validate names the first field that is not usable.
func (c Config) Validate() error {
	switch {
	case c.Group == "":
		return errors.New("ingest.group: must not be empty")
	case c.Workers < 1 || c.Workers > 64:
		return fmt.Errorf("ingest.workers: must be 1–64, got %d", c.Workers)
	case c.BatchSize < 1:
		return fmt.Errorf("ingest.batch_size: must be ≥ 1, got %d", c.BatchSize)
	case c.MaxWait <= 0:
		return errors.New("ingest.max_wait: must be positive")
	case c.DedupeSize < 1:
		return fmt.Errorf("ingest.dedupe_size: must be ≥ 1, got %d", c.DedupeSize)
	case c.MaxMessageBytes < 1024:
		return fmt.Errorf("ingest.max_message_bytes: must be ≥ 1024, got %d", c.MaxMessageBytes)
	case c.MaxFuture <= 0:
		return errors.New("ingest.max_future: must be positive")
	case c.MaxDLQPayload < 256:
		return fmt.Errorf("ingest.max_dlq_payload: must be ≥ 256, got %d", c.MaxDLQPayload)
	}
	return nil
}
