package kafkaio

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"citywatch/internal/tlsconf"
)

// TLS is how citywatch's Kafka clients encrypt the connection and check the
// brokers (CITYWATCH_KAFKA_TLS, CITYWATCH_KAFKA_TLS_CA,
// CITYWATCH_KAFKA_TLS_CERT, CITYWATCH_KAFKA_TLS_KEY).
type TLS struct {
	// Enable turns TLS on. The other fields need it.
	Enable bool `yaml:"enable"`
	// CAFile is a PEM file of the certificates that sign the brokers';
	// empty means the system's roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client's PEM certificate and key, for
	// brokers that authenticate clients by certificate; both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name checked in the brokers' certificates; empty
	// means the host of each broker address.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any broker certificate. Tests only: it
	// cannot be set from YAML or the environment.
	InsecureSkipVerify bool `yaml:"-"`
}

// SASL is how citywatch's Kafka clients authenticate
// (CITYWATCH_KAFKA_SASL_MECHANISM, CITYWATCH_KAFKA_SASL_USER,
// CITYWATCH_KAFKA_SASL_PASSWORD).
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty means no
	// authentication.
	Mechanism string `yaml:"mechanism"`
	// Username is the SASL user.
	Username string `yaml:"username"`
	// Password comes only from the environment
	// (CITYWATCH_KAFKA_SASL_PASSWORD), never from a file that might be
	// committed.
	Password string `yaml:"-"`
}

// The SASL mechanisms Config.SASL accepts.
const (
	MechanismPlain       = "PLAIN"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
)

// Plaintext reports whether c talks to Kafka with neither TLS nor SASL.
func (c Config) Plaintext() bool { return !c.TLS.Enable && c.SASL.Mechanism == "" }

// validateSecurity reports the first TLS or SASL field that is not usable;
// it reads the certificate files, so that a missing or bad one stops the
// process at start rather than at its first connection.
func (c Config) validateSecurity() error {
	t := c.TLS
	if !t.Enable && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "") {
		return errors.New("kafka.tls.enable: the TLS files and server name need TLS enabled (CITYWATCH_KAFKA_TLS=true)")
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return errors.New("kafka.tls.cert_file, kafka.tls.key_file: give both or neither")
	}
	if _, err := c.tlsConfig(); err != nil {
		return err
	}
	s := c.SASL
	switch s.Mechanism {
	case "":
		if s.Username != "" || s.Password != "" {
			return errors.New("kafka.sasl.mechanism: a SASL user or password is set without a mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
		}
		return nil
	case MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512:
	default:
		return fmt.Errorf("kafka.sasl.mechanism: %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
	}
	if s.Username == "" {
		return errors.New("kafka.sasl.username: needed with a SASL mechanism (CITYWATCH_KAFKA_SASL_USER)")
	}
	if s.Password == "" {
		return errors.New("kafka.sasl: a password is needed with a SASL mechanism (CITYWATCH_KAFKA_SASL_PASSWORD)")
	}
	_, err := c.saslMechanism()
	return err
}

// tlsConfig builds the client TLS configuration, nil when TLS is off.
func (c Config) tlsConfig() (*tls.Config, error) {
	t := c.TLS
	if !t.Enable {
		return nil, nil
	}
	tc, err := tlsconf.Client(tlsconf.Files{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile,
		ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify})
	if err != nil {
		return nil, fmt.Errorf("kafka.tls.%w", err)
	}
	return tc, nil
}

// saslMechanism builds the SASL mechanism, nil when there is none.
func (c Config) saslMechanism() (sasl.Mechanism, error) {
	s := c.SASL
	switch s.Mechanism {
	case "":
		return nil, nil
	case MechanismPlain:
		return plain.Mechanism{Username: s.Username, Password: s.Password}, nil
	case MechanismSCRAMSHA256, MechanismSCRAMSHA512:
		algo := scram.SHA256
		if s.Mechanism == MechanismSCRAMSHA512 {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, s.Username, s.Password)
		if err != nil {
			return nil, fmt.Errorf("kafka.sasl: cannot use the SCRAM credentials: %w", err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("kafka.sasl.mechanism: %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
}

// security builds both halves; an error names the field and is what every
// connection then fails with.
func (c Config) security() (*tls.Config, sasl.Mechanism, error) {
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("cannot set up Kafka TLS: %w", err)
	}
	m, err := c.saslMechanism()
	if err != nil {
		return nil, nil, fmt.Errorf("cannot set up Kafka SASL: %w", err)
	}
	return tc, m, nil
}

// failDial is a dial function that fails with err: a Dialer or Transport
// of a Config whose TLS or SASL cannot be built (Validate reports it at
// start) fails every connection with the reason instead of falling back
// to plaintext.
func failDial(err error) func(context.Context, string, string) (net.Conn, error) {
	return func(context.Context, string, string) (net.Conn, error) { return nil, err }
}

// Dialer returns the dialer of readers, consumer groups and leader
// connections, with c's TLS and SASL.
func (c Config) Dialer() *kafka.Dialer {
	d := &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true} // kafka.DefaultDialer's settings
	tc, m, err := c.security()
	if err != nil {
		d.DialFunc = failDial(err)
		return d
	}
	d.TLS, d.SASLMechanism = tc, m
	return d
}

// transportKey identifies the transports Transport shares.
type transportKey struct {
	tls  TLS
	sasl SASL
}

// transports holds one kafka.Transport per security setting. A Transport
// is a connection pool with a metadata goroutine per broker that lives
// until CloseIdleConnections, so one made per Client call would leak
// both; like kafka.DefaultTransport, which plaintext clients share, they
// live as long as the process.
var transports sync.Map // transportKey → *kafka.Transport

// Transport returns the transport of writers and admin clients, with c's
// TLS and SASL. Configs with the same security share one (and its
// connections); without TLS and SASL it is kafka.DefaultTransport.
// Certificate files are read when the first transport of a setting is
// made: a rotated certificate needs a restart.
func (c Config) Transport() *kafka.Transport {
	if c.Plaintext() {
		if t, ok := kafka.DefaultTransport.(*kafka.Transport); ok {
			return t
		}
	}
	key := transportKey{c.TLS, c.SASL}
	if t, ok := transports.Load(key); ok {
		return t.(*kafka.Transport)
	}
	t := &kafka.Transport{Dial: (&net.Dialer{Timeout: 3 * time.Second}).DialContext} // kafka.DefaultTransport's dialer
	if tc, m, err := c.security(); err != nil {
		t.Dial = failDial(err)
	} else {
		t.TLS, t.SASL = tc, m
	}
	got, _ := transports.LoadOrStore(key, t)
	return got.(*kafka.Transport)
}

// describeSecurity says how c reaches the brokers, for error messages:
// "plaintext", "TLS", "TLS and SASL SCRAM-SHA-256 as user u".
func (c Config) describeSecurity() string {
	var s string
	switch {
	case c.TLS.Enable && c.SASL.Mechanism != "":
		s = "TLS and SASL " + c.SASL.Mechanism
	case c.TLS.Enable:
		return "TLS"
	case c.SASL.Mechanism != "":
		s = "SASL " + c.SASL.Mechanism + " without TLS"
	default:
		return "plaintext"
	}
	return s + " as user " + c.SASL.Username
}
