package rtp

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Config is the RTP receiver's configuration (section gateway.rtp).
type Config struct {
	// Addr is the UDP address to listen on (CONTRACT.md: port 5004).
	Addr string `yaml:"addr"`
	// Sockets is how many sockets share Addr with SO_REUSEPORT, each read
	// by its own goroutine, so that every core receives; 0 means one per
	// CPU.
	Sockets int `yaml:"sockets"`
	// ReadBuffer is the kernel receive buffer asked for per socket.
	ReadBuffer int `yaml:"read_buffer"`
	// MaxStreams bounds the streams tracked at once; packets of further
	// SSRCs are dropped and counted.
	MaxStreams int `yaml:"max_streams"`
	// MaxDocumentBytes bounds one ONVIF document being reassembled; a
	// larger one is dropped and counted.
	MaxDocumentBytes int `yaml:"max_document_bytes"`
	// MaxBufferBytes bounds the memory of reassembly across all streams:
	// the buffers of documents being reassembled and of packets waiting
	// behind a gap. When it is spent, what the stream that has buffered
	// the longest holds is abandoned (counted as memory_budget), and so
	// on until an eighth of it is free. The default is 64 MiB (or
	// MaxDocumentBytes, if larger).
	MaxBufferBytes int `yaml:"max_buffer_bytes"`
	// ReassemblyTimeout is how long an incomplete document waits for its
	// missing packets.
	ReassemblyTimeout time.Duration `yaml:"reassembly_timeout"`
	// ReorderWait is how long packets that arrived after a gap in the
	// sequence numbers wait for the missing ones (which may be late, not
	// lost) before these are taken as lost. Up to 64 packets wait. The
	// default is 200 ms (or ReassemblyTimeout, if shorter).
	ReorderWait time.Duration `yaml:"reorder_wait"`
	// StallTimeout is how long a stream may send nothing before it is
	// reported as video_loss ("stream stalled").
	StallTimeout time.Duration `yaml:"stall_timeout"`
	// LossWindow and LossThreshold: a stream that loses more than
	// LossThreshold of the packets expected over a LossWindow is reported
	// as video_loss.
	LossWindow    time.Duration `yaml:"loss_window"`
	LossThreshold float64       `yaml:"loss_threshold"`
	// IdleTimeout is how long a stream that sent nothing, and whose stall
	// was reported, is kept; then it is forgotten, so that it does not
	// hold one of MaxStreams places. If it comes back it is reported ok.
	// The default is 10 min (or twice StallTimeout, if longer).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// HeartbeatInterval is how often a live stream's camera gets a
	// device.heartbeat (the contract asks for one a minute at least).
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// CheckInterval is how often streams are checked for stalls,
	// reassembly timeouts, loss windows and heartbeats.
	CheckInterval time.Duration `yaml:"check_interval"`
}

// SetDefaults fills zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.Addr == "" {
		c.Addr = ":5004"
	}
	if c.ReadBuffer == 0 {
		c.ReadBuffer = 16 << 20
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = 50_000
	}
	if c.MaxDocumentBytes == 0 {
		c.MaxDocumentBytes = 256 << 10
	}
	if c.MaxBufferBytes == 0 {
		c.MaxBufferBytes = max(64<<20, c.MaxDocumentBytes)
	}
	if c.ReassemblyTimeout == 0 {
		c.ReassemblyTimeout = 2 * time.Second
	}
	if c.ReorderWait == 0 {
		c.ReorderWait = min(200*time.Millisecond, c.ReassemblyTimeout)
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 10 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = max(10*time.Minute, 2*c.StallTimeout)
	}
	if c.LossWindow == 0 {
		c.LossWindow = time.Minute
	}
	if c.LossThreshold == 0 {
		c.LossThreshold = 0.05
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 30 * time.Second
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = time.Second
	}
}

// Validate names the first field that is not usable.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("gateway.rtp.addr: %q is not host:port: %w", c.Addr, err)
	}
	switch {
	case c.Sockets < 0 || c.Sockets > 64:
		return fmt.Errorf("gateway.rtp.sockets: must be 0–64, got %d", c.Sockets)
	case c.ReadBuffer < 0:
		return errors.New("gateway.rtp.read_buffer: must not be negative")
	case c.MaxStreams < 1:
		return fmt.Errorf("gateway.rtp.max_streams: must be ≥ 1, got %d", c.MaxStreams)
	case c.MaxDocumentBytes < 1500:
		return fmt.Errorf("gateway.rtp.max_document_bytes: must be ≥ 1500, got %d", c.MaxDocumentBytes)
	case c.MaxBufferBytes < c.MaxDocumentBytes:
		return fmt.Errorf("gateway.rtp.max_buffer_bytes: must be at least max_document_bytes (%d), got %d", c.MaxDocumentBytes, c.MaxBufferBytes)
	case c.ReassemblyTimeout <= 0:
		return errors.New("gateway.rtp.reassembly_timeout: must be positive")
	case c.ReorderWait <= 0 || c.ReorderWait > c.ReassemblyTimeout:
		return errors.New("gateway.rtp.reorder_wait: must be positive and at most reassembly_timeout")
	case c.StallTimeout <= 0:
		return errors.New("gateway.rtp.stall_timeout: must be positive")
	case c.IdleTimeout <= c.StallTimeout:
		return errors.New("gateway.rtp.idle_timeout: must be longer than stall_timeout")
	case c.LossWindow <= 0:
		return errors.New("gateway.rtp.loss_window: must be positive")
	case c.LossThreshold <= 0 || c.LossThreshold >= 1:
		return fmt.Errorf("gateway.rtp.loss_threshold: must be between 0 and 1, got %g", c.LossThreshold)
	case c.HeartbeatInterval <= 0:
		return errors.New("gateway.rtp.heartbeat_interval: must be positive")
	case c.CheckInterval <= 0 || c.CheckInterval > c.StallTimeout:
		return errors.New("gateway.rtp.check_interval: must be positive and at most stall_timeout")
	}
	return nil
}
