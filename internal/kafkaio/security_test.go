package kafkaio

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// testPKI is a CA and the certificates it signed, as PEM files in a
// test's temporary folder.
type testPKI struct {
	caFile                string
	clientCert, clientKey string
	server                tls.Certificate
	pool                  *x509.CertPool
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "citywatch test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := testPKI{caFile: writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER), pool: x509.NewCertPool()}
	p.pool.AddCert(ca)

	issue := func(serial int64, cn string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	serverDER, serverKey := issue(2, "broker", x509.ExtKeyUsageServerAuth)
	p.server = tls.Certificate{Certificate: [][]byte{serverDER}, PrivateKey: serverKey}
	clientDER, clientKey := issue(3, "citywatch", x509.ExtKeyUsageClientAuth)
	p.clientCert = writePEM(t, dir, "client.pem", "CERTIFICATE", clientDER)
	keyDER, err := x509.MarshalECPrivateKey(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	p.clientKey = writePEM(t, dir, "client-key.pem", "EC PRIVATE KEY", keyDER)
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t *testing.T, dir, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const (
	testUser     = "citywatch"
	testPassword = "correct horse battery staple"
)

// secureBroker starts an in-process broker that speaks only TLS, asks for
// a client certificate and authenticates by SASL mechanism, and returns a
// Config that reaches it with all three.
func secureBroker(t *testing.T, mechanism string) Config {
	t.Helper()
	p := newTestPKI(t)
	c := Config{Partitions: 3}
	c.SetDefaults()
	cl, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.SeedTopics(int32(c.Partitions), c.Topics(AllTopics...)...),
		kfake.TLS(&tls.Config{
			Certificates: []tls.Certificate{p.server},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    p.pool,
			MinVersion:   tls.VersionTLS12,
		}),
		kfake.EnableSASL(),
		kfake.Superuser(mechanism, testUser, testPassword),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	c.Brokers = cl.ListenAddrs()
	c.TLS = TLS{Enable: true, CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey}
	c.SASL = SASL{Mechanism: mechanism, Username: testUser, Password: testPassword}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSecureClients runs every kind of client citywatch builds through a
// Config with TLS (and a client certificate) and SCRAM against a broker
// that accepts nothing else: topic creation, the admin client, a writer,
// a group reader (Consumer), the lag monitor's calls, leader connections
// (OpenPartition), a partition reader and a consumer group (Share).
func TestSecureClients(t *testing.T) {
	c := secureBroker(t, MechanismSCRAMSHA256)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	if err := EnsureTopics(ctx, c, "extra"); err != nil {
		t.Fatalf("topic creation: %v", err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("admin client: %v", err)
	}
	topic := c.Topic(TopicEvents)
	produce(t, c, topic, 50)

	h := &collector{}
	cons := NewConsumer(c, ConsumerConfig{Group: "secure", Topics: []string{topic}}, NewMetrics(prometheus.NewRegistry()), log, h)
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cons.Run(cctx) }()
	waitFor(t, "50 messages through the group reader", func() bool { return h.count() == 50 })
	client := c.Client()
	waitFor(t, "lag 0", func() bool {
		lag, err := Lag(ctx, client, "secure", []string{topic})
		var sum int64
		for _, p := range lag[topic] {
			sum += p
		}
		return err == nil && len(lag[topic]) == c.Partitions && sum == 0
	})
	stop()
	if err := <-done; err != nil {
		t.Fatalf("group reader: %v", err)
	}

	parts, err := Partitions(ctx, c, topic)
	if err != nil {
		t.Fatal(err)
	}
	n, first := 0, -1
	for _, p := range parts {
		pr, err := OpenPartition(ctx, c, topic, p)
		if err != nil {
			t.Fatalf("leader connection: %v", err)
		}
		err = pr.Each(func(*kafka.Message) { n++ })
		if pr.End > pr.First && first < 0 {
			first = p
		}
		pr.Close()
		if err != nil {
			t.Fatalf("leader connection: %v", err)
		}
	}
	if n != 50 {
		t.Errorf("leader connections read %d messages, want 50", n)
	}

	r := c.NewPartitionReader(topic, first)
	defer r.Close()
	if err := r.SetOffset(kafka.FirstOffset); err != nil {
		t.Fatal(err)
	}
	if _, err := r.FetchMessage(ctx); err != nil {
		t.Fatalf("partition reader: %v", err)
	}

	sctx, sstop := context.WithCancel(ctx)
	var owned []int
	err = Share(sctx, c, "secure-share", "secure.coord", 2, log, func(gctx context.Context, _ int32, o []int) error {
		owned = o
		sstop()
		<-gctx.Done()
		return nil
	})
	if err != nil || len(owned) != 2 {
		t.Errorf("consumer group: err %v, owned %v, want both parts", err, owned)
	}
}

// TestSecureMechanisms checks that the other SASL mechanisms reach a
// broker that wants them.
func TestSecureMechanisms(t *testing.T) {
	for _, m := range []string{MechanismPlain, MechanismSCRAMSHA512} {
		t.Run(m, func(t *testing.T) {
			c := secureBroker(t, m)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			if err := c.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			produce(t, c, c.Topic(TopicAlerts), 3)
		})
	}
}

// TestSecureFailures checks that a connection that cannot be secured
// fails with an error that says why, for the admin client and transport
// (Ping, writers) and for the dialer (readers, leader connections, groups).
func TestSecureFailures(t *testing.T) {
	good := secureBroker(t, MechanismSCRAMSHA256)
	// A broker that refuses a SASL login may just close the connection
	// (kfake does; Apache Kafka answers SASL_AUTHENTICATION_FAILED
	// first): the dialer reports kafka.SASLAuthenticationFailed, the
	// transport only an EOF, so Ping names how it connected.
	tests := []struct {
		name         string
		edit         func(*Config)
		ping, leader string // in the errors of Ping and OpenPartition
	}{
		{"wrong password", func(c *Config) { c.SASL.Password = "wrong" },
			"over TLS and SASL SCRAM-SHA-256 as user citywatch", kafka.SASLAuthenticationFailed.Error()},
		{"no CA: system roots do not know the broker", func(c *Config) { c.TLS.CAFile = "" },
			"certificate signed by unknown authority", "certificate signed by unknown authority"},
		{"missing CA file", func(c *Config) { c.TLS.CAFile = filepath.Join(t.TempDir(), "nope.pem") },
			"cannot set up Kafka TLS: kafka.tls.ca_file", "cannot set up Kafka TLS: kafka.tls.ca_file"},
		{"plaintext to a TLS listener", func(c *Config) { c.TLS = TLS{} }, "over SASL SCRAM-SHA-256 without TLS", "cannot reach the leader"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
			defer cancel()
			err := c.Ping(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.ping) {
				t.Errorf("Ping: %v, want an error containing %q", err, tt.ping)
			}
			_, err = OpenPartition(ctx, c, c.Topic(TopicEvents), 0)
			if err == nil || !strings.Contains(err.Error(), tt.leader) {
				t.Errorf("OpenPartition: %v, want an error containing %q", err, tt.leader)
			}
			w := c.NewWriter()
			defer w.Close()
			if err := w.WriteMessages(ctx, kafka.Message{Topic: c.Topic(TopicEvents), Value: []byte("x")}); err == nil {
				t.Error("writer: wrote through an insecure connection")
			}
		})
	}
}

func TestSecurityValidate(t *testing.T) {
	p := newTestPKI(t)
	notPEM := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	tests := []struct {
		name    string
		tls     TLS
		sasl    SASL
		wantErr string
	}{
		{"plaintext", TLS{}, SASL{}, ""},
		{"tls with system roots", TLS{Enable: true}, SASL{}, ""},
		{"tls with CA and client cert", TLS{Enable: true, CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey}, SASL{}, ""},
		{"CA without tls", TLS{CAFile: p.caFile}, SASL{}, "kafka.tls.enable"},
		{"missing CA", TLS{Enable: true, CAFile: "/nonexistent/ca.pem"}, SASL{}, "kafka.tls.ca_file"},
		{"CA not PEM", TLS{Enable: true, CAFile: notPEM}, SASL{}, "holds no PEM certificate"},
		{"cert without key", TLS{Enable: true, CertFile: p.clientCert}, SASL{}, "give both or neither"},
		{"key does not match", TLS{Enable: true, CertFile: p.caFile, KeyFile: p.clientKey}, SASL{}, "kafka.tls.cert_file"},
		{"scram", TLS{}, SASL{Mechanism: "SCRAM-SHA-512", Username: "u", Password: "p"}, ""},
		{"plain", TLS{}, SASL{Mechanism: "PLAIN", Username: "u", Password: "p"}, ""},
		{"unknown mechanism", TLS{}, SASL{Mechanism: "GSSAPI", Username: "u", Password: "p"}, "kafka.sasl.mechanism"},
		{"no user", TLS{}, SASL{Mechanism: "PLAIN", Password: "p"}, "kafka.sasl.username"},
		{"no password", TLS{}, SASL{Mechanism: "PLAIN", Username: "u"}, "CITYWATCH_KAFKA_SASL_PASSWORD"},
		{"user without mechanism", TLS{}, SASL{Username: "u"}, "kafka.sasl.mechanism"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Brokers: []string{"127.0.0.1:9092"}, TLS: tt.tls, SASL: tt.sasl}
			c.SetDefaults()
			err := c.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestTransportShared checks that clients of one security setting share
// a transport (a transport per call would leak its pools), and that
// plaintext ones keep kafka-go's default.
func TestTransportShared(t *testing.T) {
	c := Config{Brokers: []string{"127.0.0.1:9092"}}
	if c.Transport() != kafka.DefaultTransport {
		t.Error("plaintext Transport is not kafka.DefaultTransport")
	}
	c.SASL = SASL{Mechanism: MechanismPlain, Username: "u", Password: "p"}
	a, b := c.Transport(), c.Transport()
	if a != b || a.SASL == nil {
		t.Errorf("SASL transports: %p and %p (SASL %v), want one shared with SASL", a, b, a.SASL)
	}
	c.SASL.Password = "q"
	if c.Transport() == a {
		t.Error("another password shares the transport")
	}
	if d := c.Dialer(); d.SASLMechanism == nil || d.TLS != nil {
		t.Errorf("dialer: SASL %v, TLS %v", d.SASLMechanism, d.TLS)
	}
}
