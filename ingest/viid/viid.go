// Package viid is the GA/T 1400 (视图库) half of citywatch's gateway
// (CONTRACT.md section 8): the HTTP endpoints that checkpoints and video
// platforms push motor-vehicle, face and person records to, with device
// registration (HTTP Digest, RFC 7616 MD5, as GA/T 1400 devices do) and
// keepalive. Each record is mapped to a contract event — a motor vehicle
// with a TollgateID to checkpoint.pass, any other record to
// camera.detection, a keepalive to device.heartbeat — and handed to the
// gateway's publisher, which answers only once the event is written to
// Kafka: a record is acknowledged (StatusCode 0) only when it is durable.
// The requests in flight, and the body bytes they hold, are bounded;
// beyond the bound a request is answered 503 with Retry-After at once.
//
// The handlers are the gateway's HTTP edge: this package chooses the HTTP
// status codes of its own server (in httpStatus and the auth challenge),
// as web/ does for the web role. Field names are matched without regard to
// case, numbers may come as strings, and times without offset are local
// time of the configured zone.
package viid

import (
	"context"
	"errors"
	"fmt"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
)

// Config is the GA/T 1400 receiver's configuration (section gateway.viid).
type Config struct {
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxRecords bounds the records of one request.
	MaxRecords int `yaml:"max_records"`
	// MaxInFlight bounds the GA/T 1400 requests being handled at once;
	// beyond it a request is answered 503 with Retry-After before its
	// body is read. Each may hold a body and wait AckTimeout for Kafka.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxInFlightBytes bounds the body bytes the requests in flight may
	// hold: a request reserves its Content-Length, or MaxBodyBytes when
	// it does not declare one. Memory used is a small multiple of it
	// (the body, its records, their events).
	MaxInFlightBytes int64 `yaml:"max_in_flight_bytes"`
	// MaxInFlightPerAddress and MaxInFlightBytesPerAddress bound what one
	// client address may hold of those, so that one client sending slowly
	// (or a flood from one address) cannot take the whole budget from the
	// others. Defaults: a quarter of each total, and at least one request
	// of MaxBodyBytes. Set them to the totals to turn the bound off, as
	// behind a proxy through which every client comes from one address.
	MaxInFlightPerAddress      int   `yaml:"max_in_flight_per_address"`
	MaxInFlightBytesPerAddress int64 `yaml:"max_in_flight_bytes_per_address"`
	// Username and Password, when Username is set, make devices register
	// with HTTP Digest authentication before they push; empty: no
	// authentication, which New logs as a warning.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// DeviceIDIsUsername makes a registration's DeviceID have to be the
	// Digest username, for a deployment whose one account belongs to one
	// platform registering under its own id. By default the holder of the
	// credentials may register any DeviceID: with one account shared by a
	// platform's devices, binding the id to it would let one device in.
	// A replayed Authorization header cannot register another DeviceID
	// either way: each nonce count is accepted once.
	DeviceIDIsUsername bool `yaml:"device_id_is_username"`
	// AnyAddress lets a registered device push and keep alive from any
	// address. By default a registration holds only for the address it
	// was made from: pushes name their device in the unauthenticated
	// User-Identify header, and the address is what ties them to the
	// Digest registration. Set it for platforms whose requests leave
	// from several addresses.
	AnyAddress bool `yaml:"any_address"`
	// Realm is the Digest realm.
	Realm string `yaml:"realm"`
	// NonceTTL is how long a Digest nonce is valid.
	NonceTTL time.Duration `yaml:"nonce_ttl"`
	// RegistrationTTL is how long a registration lasts without a
	// keepalive.
	RegistrationTTL time.Duration `yaml:"registration_ttl"`
	// MaxRegistered bounds the devices registered at once.
	MaxRegistered int `yaml:"max_registered"`
	// AckTimeout bounds how long a request waits for its records to be
	// written before it is answered 503.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// RetryAfter is the Retry-After of a 503 answer.
	RetryAfter time.Duration `yaml:"retry_after"`
}

// SetDefaults fills zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 8 << 20
	}
	if c.MaxRecords == 0 {
		c.MaxRecords = 1000
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 256
	}
	if c.MaxInFlightBytes == 0 {
		c.MaxInFlightBytes = 8 * c.MaxBodyBytes
	}
	if c.MaxInFlightPerAddress == 0 {
		c.MaxInFlightPerAddress = max(c.MaxInFlight/4, 1)
	}
	if c.MaxInFlightBytesPerAddress == 0 {
		c.MaxInFlightBytesPerAddress = min(max(c.MaxInFlightBytes/4, c.MaxBodyBytes), c.MaxInFlightBytes)
	}
	if c.Realm == "" {
		c.Realm = "citywatch"
	}
	if c.NonceTTL == 0 {
		c.NonceTTL = 5 * time.Minute
	}
	if c.RegistrationTTL == 0 {
		c.RegistrationTTL = time.Hour
	}
	if c.MaxRegistered == 0 {
		c.MaxRegistered = 100_000
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = 10 * time.Second
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = time.Second
	}
}

// Validate names the first field that is not usable.
func (c Config) Validate() error {
	switch {
	case c.MaxBodyBytes < 1024:
		return fmt.Errorf("gateway.viid.max_body_bytes: must be ≥ 1024, got %d", c.MaxBodyBytes)
	case c.MaxRecords < 1:
		return fmt.Errorf("gateway.viid.max_records: must be ≥ 1, got %d", c.MaxRecords)
	case c.MaxInFlight < 1:
		return fmt.Errorf("gateway.viid.max_in_flight: must be ≥ 1, got %d", c.MaxInFlight)
	case c.MaxInFlightBytes < c.MaxBodyBytes:
		return fmt.Errorf("gateway.viid.max_in_flight_bytes: must be ≥ max_body_bytes (%d), got %d", c.MaxBodyBytes, c.MaxInFlightBytes)
	case c.MaxInFlightPerAddress < 1 || c.MaxInFlightPerAddress > c.MaxInFlight:
		return fmt.Errorf("gateway.viid.max_in_flight_per_address: must be 1 to max_in_flight (%d), got %d", c.MaxInFlight, c.MaxInFlightPerAddress)
	case c.MaxInFlightBytesPerAddress < c.MaxBodyBytes || c.MaxInFlightBytesPerAddress > c.MaxInFlightBytes:
		return fmt.Errorf("gateway.viid.max_in_flight_bytes_per_address: must be max_body_bytes (%d) to max_in_flight_bytes (%d), got %d",
			c.MaxBodyBytes, c.MaxInFlightBytes, c.MaxInFlightBytesPerAddress)
	case c.Username != "" && c.Password == "":
		return errors.New("gateway.viid.password: must be set when username is")
	case c.NonceTTL <= 0:
		return errors.New("gateway.viid.nonce_ttl: must be positive")
	case c.RegistrationTTL <= 0:
		return errors.New("gateway.viid.registration_ttl: must be positive")
	case c.MaxRegistered < 1:
		return fmt.Errorf("gateway.viid.max_registered: must be ≥ 1, got %d", c.MaxRegistered)
	case c.AckTimeout <= 0:
		return errors.New("gateway.viid.ack_timeout: must be positive")
	case c.RetryAfter < time.Second:
		return errors.New("gateway.viid.retry_after: must be at least 1s")
	}
	return nil
}

// ErrBusy is returned by a Publisher whose buffer is full; the request is
// answered 503 with Retry-After.
var ErrBusy = errors.New("gateway buffer full")

// Publisher writes events to Kafka. Publish returns once every event is
// written (nil), or with ErrBusy when they could not be queued, or with
// another error when they were not written in time; it does not keep evs.
type Publisher interface {
	Publish(ctx context.Context, evs []event.Event) error
}

// Devices looks devices up in the registry; *city.City is one.
type Devices interface {
	Device(id string) *city.Device
}
