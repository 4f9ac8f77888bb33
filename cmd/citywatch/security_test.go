package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecurityEnvironment checks that the environment of section 9 sets
// the connections' security, and that the Kafka password is taken from
// nowhere else.
func TestSecurityEnvironment(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	os.WriteFile(file, []byte("kafka:\n  sasl:\n    mechanism: PLAIN\n    username: fromfile\n  tls:\n    server_name: kafka.example\n"), 0o600)
	c, err := loadConfig(env(map[string]string{
		"CITYWATCH_CONFIG":               file,
		"CITYWATCH_KAFKA_TLS":            "true",
		"CITYWATCH_KAFKA_TLS_CA":         "/etc/kafka/ca.pem",
		"CITYWATCH_KAFKA_TLS_CERT":       "/etc/kafka/client.pem",
		"CITYWATCH_KAFKA_TLS_KEY":        "/etc/kafka/client-key.pem",
		"CITYWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
		"CITYWATCH_KAFKA_SASL_USER":      "citywatch",
		"CITYWATCH_KAFKA_SASL_PASSWORD":  "s3cret",
		"CITYWATCH_CLICKHOUSE_TLS":       "1",
		"CITYWATCH_CLICKHOUSE_TLS_CA":    "/etc/clickhouse/ca.pem",
		"CITYWATCH_ALLOW_PLAINTEXT":      "false",
	}))
	if err != nil {
		t.Fatal(err)
	}
	k := c.Kafka
	if !k.TLS.Enable || k.TLS.CAFile != "/etc/kafka/ca.pem" || k.TLS.CertFile != "/etc/kafka/client.pem" || k.TLS.KeyFile != "/etc/kafka/client-key.pem" || k.TLS.ServerName != "kafka.example" {
		t.Errorf("kafka TLS = %+v", k.TLS)
	}
	if k.SASL.Mechanism != "SCRAM-SHA-512" || k.SASL.Username != "citywatch" || k.SASL.Password != "s3cret" {
		t.Errorf("kafka SASL = %+v", k.SASL)
	}
	if !c.ClickHouse.TLS.Enable || c.ClickHouse.TLS.CAFile != "/etc/clickhouse/ca.pem" || c.AllowPlaintext {
		t.Errorf("clickhouse TLS = %+v, allow plaintext %v", c.ClickHouse.TLS, c.AllowPlaintext)
	}

	os.WriteFile(file, []byte("kafka:\n  sasl:\n    password: s3cret\n"), 0o600)
	if _, err := loadConfig(env(map[string]string{"CITYWATCH_CONFIG": file})); err == nil || !strings.Contains(err.Error(), "password") {
		t.Errorf("kafka.sasl.password in YAML: err = %v, want it rejected", err)
	}
	for _, v := range []string{"CITYWATCH_KAFKA_TLS", "CITYWATCH_CLICKHOUSE_TLS", "CITYWATCH_ALLOW_PLAINTEXT"} {
		if _, err := loadConfig(env(map[string]string{v: "yes please"})); err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("%s=yes please: err = %v, want it named", v, err)
		}
	}
}

// TestRefusePlaintext checks that run and gateway (validate with Kafka
// needed) refuse connections that would cross a network in plaintext,
// name them and the way out, and let loopback, TLS or SASL, and
// CITYWATCH_ALLOW_PLAINTEXT through; the demo (no external Kafka) is not
// concerned.
func TestRefusePlaintext(t *testing.T) {
	const key = "0123456789abcdef0123"
	sink := map[string]bool{"sink": true}
	ingest := map[string]bool{"ingest": true}
	tests := []struct {
		name      string
		env       map[string]string
		roles     map[string]bool
		needKafka bool
		wantErr   []string // all in the error; none: valid
	}{
		{"loopback kafka and clickhouse", map[string]string{"CITYWATCH_KAFKA_BROKERS": "127.0.0.1:9092,localhost:9093,[::1]:9094"}, sink, true, nil},
		{"remote kafka plaintext", map[string]string{"CITYWATCH_KAFKA_BROKERS": "127.0.0.1:9092,kafka-1:9092"}, ingest, true,
			[]string{"kafka-1:9092", "plaintext", "CITYWATCH_ALLOW_PLAINTEXT", "CITYWATCH_KAFKA_TLS"}},
		{"remote kafka with TLS", map[string]string{"CITYWATCH_KAFKA_BROKERS": "kafka-1:9092", "CITYWATCH_KAFKA_TLS": "true"}, ingest, true, nil},
		{"remote kafka with SASL", map[string]string{"CITYWATCH_KAFKA_BROKERS": "kafka-1:9092", "CITYWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
			"CITYWATCH_KAFKA_SASL_USER": "u", "CITYWATCH_KAFKA_SASL_PASSWORD": "p"}, ingest, true, nil},
		{"remote kafka allowed", map[string]string{"CITYWATCH_KAFKA_BROKERS": "kafka-1:9092", "CITYWATCH_ALLOW_PLAINTEXT": "true"}, ingest, true, nil},
		{"remote clickhouse plaintext", map[string]string{"CITYWATCH_KAFKA_BROKERS": "kafka-1:9092", "CITYWATCH_KAFKA_TLS": "true",
			"CITYWATCH_CLICKHOUSE_ADDR": "clickhouse:9000"}, sink, true,
			[]string{"clickhouse:9000", "plaintext", "CITYWATCH_ALLOW_PLAINTEXT", "CITYWATCH_CLICKHOUSE_TLS"}},
		{"remote clickhouse plaintext for web", map[string]string{"CITYWATCH_KAFKA_BROKERS": "127.0.0.1:9092",
			"CITYWATCH_CLICKHOUSE_ADDR": "clickhouse:9000"}, map[string]bool{"web": true}, true, []string{"clickhouse:9000"}},
		{"remote clickhouse unused by ingest", map[string]string{"CITYWATCH_KAFKA_BROKERS": "127.0.0.1:9092",
			"CITYWATCH_CLICKHOUSE_ADDR": "clickhouse:9000"}, ingest, true, nil},
		{"remote clickhouse with TLS", map[string]string{"CITYWATCH_KAFKA_BROKERS": "127.0.0.1:9092",
			"CITYWATCH_CLICKHOUSE_ADDR": "clickhouse:9440", "CITYWATCH_CLICKHOUSE_TLS": "true"}, sink, true, nil},
		{"remote clickhouse allowed", map[string]string{"CITYWATCH_KAFKA_BROKERS": "kafka-1:9092",
			"CITYWATCH_CLICKHOUSE_ADDR": "clickhouse:9000", "CITYWATCH_ALLOW_PLAINTEXT": "true"}, sink, true, nil},
		{"demo: embedded broker", map[string]string{"CITYWATCH_CLICKHOUSE_ADDR": "clickhouse:9000"}, sink, false, nil},
		{"SASL without a password", map[string]string{"CITYWATCH_KAFKA_BROKERS": "kafka-1:9092", "CITYWATCH_KAFKA_SASL_MECHANISM": "PLAIN",
			"CITYWATCH_KAFKA_SASL_USER": "u"}, ingest, true, []string{"CITYWATCH_KAFKA_SASL_PASSWORD"}},
		{"missing Kafka CA", map[string]string{"CITYWATCH_KAFKA_BROKERS": "kafka-1:9092", "CITYWATCH_KAFKA_TLS": "true",
			"CITYWATCH_KAFKA_TLS_CA": "/nonexistent/ca.pem"}, ingest, true, []string{"kafka.tls.ca_file"}},
		{"missing ClickHouse CA", map[string]string{"CITYWATCH_KAFKA_BROKERS": "127.0.0.1:9092", "CITYWATCH_CLICKHOUSE_TLS": "true",
			"CITYWATCH_CLICKHOUSE_TLS_CA": "/nonexistent/ca.pem"}, sink, true, []string{"tls.ca_file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.env["CITYWATCH_PSEUDONYM_KEY"] = key
			c, err := loadConfig(env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			err = c.validate(tt.roles, tt.needKafka)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Errorf("validate: %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("validate: nil, want an error naming %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("validate: %v, want %q in it", err, w)
				}
			}
		})
	}
}
