package gateway

import (
	"errors"
	"fmt"
	"net"
	"time"

	"citywatch/ingest/rtp"
	"citywatch/ingest/viid"
)

// Config is the gateway's configuration (section gateway).
type Config struct {
	// HTTPAddr is the address of the gateway's HTTP server: the GA/T 1400
	// endpoints, /metrics and /healthz.
	HTTPAddr string `yaml:"http_addr"`
	// BufferSize bounds the events waiting to be written to Kafka. When it
	// is full, GA/T 1400 pushes are answered 503 with Retry-After and RTP
	// events are dropped and counted.
	BufferSize int `yaml:"buffer_size"`
	// Writers is the number of goroutines writing batches to Kafka.
	Writers int `yaml:"writers"`
	// BatchSize is the most events one write to Kafka carries.
	BatchSize int `yaml:"batch_size"`
	// ShutdownTimeout bounds the stop: answering the requests in flight
	// and flushing the buffer.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	RTP             rtp.Config    `yaml:"rtp"`
	VIID            viid.Config   `yaml:"viid"`

	// Location is the zone of GA/T 1400 times without offset and of the
	// times the gateway writes (CITYWATCH_TZ; cmd sets it from the
	// top-level timezone); nil means Asia/Shanghai.
	Location *time.Location `yaml:"-"`
}

// SetDefaults fills zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.HTTPAddr == "" {
		c.HTTPAddr = ":8090"
	}
	if c.BufferSize == 0 {
		c.BufferSize = 50_000
	}
	if c.Writers == 0 {
		c.Writers = 2
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
	c.RTP.SetDefaults()
	c.VIID.SetDefaults()
}

// Validate names the first field that is not usable.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("gateway.http_addr: %q is not host:port: %w", c.HTTPAddr, err)
	}
	switch {
	case c.BufferSize < 1:
		return fmt.Errorf("gateway.buffer_size: must be ≥ 1, got %d", c.BufferSize)
	case c.Writers < 1 || c.Writers > 64:
		return fmt.Errorf("gateway.writers: must be 1–64, got %d", c.Writers)
	case c.BatchSize < 1:
		return fmt.Errorf("gateway.batch_size: must be ≥ 1, got %d", c.BatchSize)
	case c.ShutdownTimeout <= 0:
		return errors.New("gateway.shutdown_timeout: must be positive")
	}
	if err := c.RTP.Validate(); err != nil {
		return err
	}
	return c.VIID.Validate()
}
