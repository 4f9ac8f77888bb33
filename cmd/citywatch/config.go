package main

import (
	"bytes"
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"gopkg.in/yaml.v3"

	"citywatch/dispatch"
	"citywatch/ingest"
	"citywatch/ingest/gateway"
	"citywatch/internal/kafkaio"
	"citywatch/internal/memlimit"
	"citywatch/rules"
	"citywatch/store"
	"citywatch/web"
)

// Config is the whole configuration of one citywatch process: the YAML file
// named by CITYWATCH_CONFIG (unknown fields rejected), then the environment
// of CONTRACT.md section 9 on top, then defaults for what is still unset.
type Config struct {
	Kafka      kafkaio.Config   `yaml:"kafka"`
	ClickHouse store.Config     `yaml:"clickhouse"`
	Ingest     ingest.Config    `yaml:"ingest"`
	Sink       store.SinkConfig `yaml:"sink"`
	Rules      rules.RoleConfig `yaml:"rules"`
	Dispatch   dispatch.Config  `yaml:"dispatch"`
	HTTP       web.Config       `yaml:"http"`
	Gateway    gateway.Config   `yaml:"gateway"`
	// Runtime is the memory policy: the soft memory limit and the
	// collector's pace (GOMEMLIMIT and GOGC win).
	Runtime memlimit.Config `yaml:"runtime"`
	// Timezone is the local zone for schedules, display and GA/T 1400
	// times (CITYWATCH_TZ).
	Timezone string `yaml:"timezone"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// Hotlist and Watchlist are CSV files (CITYWATCH_HOTLIST,
	// CITYWATCH_WATCHLIST); empty means the built-in samples.
	Hotlist   string `yaml:"hotlist"`
	Watchlist string `yaml:"watchlist"`

	// PseudonymKey is the secret for buyer pseudonyms. It comes only from
	// the environment (CITYWATCH_PSEUDONYM_KEY), never from a file that
	// might be committed.
	PseudonymKey []byte `yaml:"-"`

	// AllowPlaintext lets run and gateway talk to Kafka without TLS or
	// SASL, and to ClickHouse without TLS, off loopback
	// (CITYWATCH_ALLOW_PLAINTEXT). Only the environment sets it: it is a
	// decision about the network a deployment runs in, not a setting to
	// copy along with a configuration file.
	AllowPlaintext bool `yaml:"-"`
}

// loadConfig reads the file named by CITYWATCH_CONFIG (if any) and applies
// the environment. getenv is os.Getenv outside tests.
func loadConfig(getenv func(string) string) (Config, error) {
	var c Config
	if path := getenv("CITYWATCH_CONFIG"); path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("cannot read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) { // an empty file is an empty config
			return c, fmt.Errorf("cannot parse config %s: %w", path, err)
		}
	}
	if v := getenv("CITYWATCH_KAFKA_BROKERS"); v != "" {
		c.Kafka.Brokers = splitList(v)
	}
	if v := getenv("CITYWATCH_TOPIC_PREFIX"); v != "" {
		c.Kafka.TopicPrefix = v
	}
	if v := getenv("CITYWATCH_CLICKHOUSE_ADDR"); v != "" {
		c.ClickHouse.Addr = splitList(v)
	}
	if v := getenv("CITYWATCH_CLICKHOUSE_DB"); v != "" {
		c.ClickHouse.Database = v
	}
	if v := getenv("CITYWATCH_CLICKHOUSE_USER"); v != "" {
		c.ClickHouse.User = v
	}
	if v := getenv("CITYWATCH_CLICKHOUSE_PASSWORD"); v != "" {
		c.ClickHouse.Password = v
	}
	if v := getenv("CITYWATCH_HTTP_ADDR"); v != "" {
		c.HTTP.Addr = v
	}
	if v := getenv("CITYWATCH_TZ"); v != "" {
		c.Timezone = v
	}
	if v := getenv("CITYWATCH_HOTLIST"); v != "" {
		c.Hotlist = v
	}
	if v := getenv("CITYWATCH_WATCHLIST"); v != "" {
		c.Watchlist = v
	}
	if v := getenv("CITYWATCH_PSEUDONYM_KEY"); v != "" {
		c.PseudonymKey = []byte(v)
	}
	if err := c.securityFromEnv(getenv); err != nil {
		return c, err
	}
	c.setDefaults()
	return c, nil
}

// securityFromEnv applies the environment of the connections' security:
// Kafka TLS and SASL, ClickHouse TLS, and the permission to go without.
func (c *Config) securityFromEnv(getenv func(string) string) error {
	bools := []struct {
		name string
		dst  *bool
	}{
		{"CITYWATCH_KAFKA_TLS", &c.Kafka.TLS.Enable},
		{"CITYWATCH_CLICKHOUSE_TLS", &c.ClickHouse.TLS.Enable},
		{"CITYWATCH_ALLOW_PLAINTEXT", &c.AllowPlaintext},
	}
	for _, b := range bools {
		v := getenv(b.name)
		if v == "" {
			continue
		}
		on, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%s: %q is not true or false", b.name, v)
		}
		*b.dst = on
	}
	strs := []struct {
		name string
		dst  *string
	}{
		{"CITYWATCH_KAFKA_TLS_CA", &c.Kafka.TLS.CAFile},
		{"CITYWATCH_KAFKA_TLS_CERT", &c.Kafka.TLS.CertFile},
		{"CITYWATCH_KAFKA_TLS_KEY", &c.Kafka.TLS.KeyFile},
		{"CITYWATCH_KAFKA_SASL_MECHANISM", &c.Kafka.SASL.Mechanism},
		{"CITYWATCH_KAFKA_SASL_USER", &c.Kafka.SASL.Username},
		{"CITYWATCH_KAFKA_SASL_PASSWORD", &c.Kafka.SASL.Password},
		{"CITYWATCH_CLICKHOUSE_TLS_CA", &c.ClickHouse.TLS.CAFile},
	}
	for _, s := range strs {
		if v := getenv(s.name); v != "" {
			*s.dst = v
		}
	}
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (c *Config) setDefaults() {
	c.Kafka.SetDefaults()
	c.ClickHouse.SetDefaults()
	c.Ingest.SetDefaults()
	c.Sink.SetDefaults()
	if c.Rules.Upstream == "" {
		c.Rules.Upstream = c.Ingest.Group // the rules wait for this ingest
	}
	c.Rules.SetDefaults()
	c.Dispatch.SetDefaults()
	c.HTTP.SetDefaults()
	c.Gateway.SetDefaults()
	c.Runtime.SetDefaults()
	if c.Timezone == "" {
		c.Timezone = "Asia/Shanghai"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
}

// validate checks the parts that the chosen roles use; needKafka is false
// for the demo, which brings its own broker.
func (c Config) validate(roles map[string]bool, needKafka bool) error {
	if needKafka {
		if err := c.Kafka.Validate(); err != nil {
			return fmt.Errorf("%w (set CITYWATCH_KAFKA_BROKERS)", err)
		}
	}
	if _, err := time.LoadLocation(c.Timezone); err != nil {
		return fmt.Errorf("timezone: %w", err)
	}
	if err := c.Runtime.Validate(); err != nil {
		return err
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level: %q is not debug, info, warn or error", c.LogLevel)
	}
	if roles["ingest"] {
		if err := c.Ingest.Validate(); err != nil {
			return err
		}
		if len(c.PseudonymKey) < 16 {
			return errors.New("CITYWATCH_PSEUDONYM_KEY: the ingest role needs a secret of at least 16 bytes")
		}
	}
	if roles["sink"] {
		if err := c.Sink.Validate(); err != nil {
			return err
		}
	}
	if roles["rules"] {
		if err := c.Rules.Validate(); err != nil {
			return err
		}
		if len(c.PseudonymKey) < 16 {
			return errors.New("CITYWATCH_PSEUDONYM_KEY: the rules role needs the secret ingest uses (at least 16 bytes), to match the watchlist")
		}
	}
	if roles["dispatch"] {
		if err := c.Dispatch.Validate(); err != nil {
			return err
		}
	}
	if roles["sink"] || roles["migrate"] {
		if err := c.ClickHouse.Validate(); err != nil {
			return err
		}
	}
	if roles["web"] {
		if err := c.HTTP.Validate(); err != nil {
			return err
		}
	}
	if needKafka {
		if err := c.refusePlaintext(roles); err != nil {
			return err
		}
	}
	return nil
}

// refusePlaintext reports the connections of run and gateway (the
// commands that need an external Kafka) that would cross a network in
// plaintext, unless CITYWATCH_ALLOW_PLAINTEXT is set: Kafka brokers off
// loopback with neither TLS nor SASL, and ClickHouse off loopback without
// TLS where a role connects to it (sink, web). Loopback stays allowed: a
// broker or server on the same host is not reached over a network.
func (c Config) refusePlaintext(roles map[string]bool) error {
	if c.AllowPlaintext {
		return nil
	}
	if c.Kafka.Plaintext() {
		if off := offLoopback(c.Kafka.Brokers); len(off) > 0 {
			return fmt.Errorf("kafka: brokers %s would be reached in plaintext: configure TLS or SASL (CITYWATCH_KAFKA_TLS, CITYWATCH_KAFKA_SASL_MECHANISM) or set CITYWATCH_ALLOW_PLAINTEXT=true", strings.Join(off, ","))
		}
	}
	if (roles["sink"] || roles["web"]) && !c.ClickHouse.TLS.Enable {
		if off := offLoopback(c.ClickHouse.Addr); len(off) > 0 {
			return fmt.Errorf("clickhouse: %s would be reached in plaintext: configure TLS (CITYWATCH_CLICKHOUSE_TLS) or set CITYWATCH_ALLOW_PLAINTEXT=true", strings.Join(off, ","))
		}
	}
	return nil
}

// offLoopback returns the addresses (host:port) whose host is not a
// loopback address or "localhost".
func offLoopback(addrs []string) []string {
	var off []string
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		}
		if strings.EqualFold(host, "localhost") {
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			continue
		}
		off = append(off, a)
	}
	return off
}

// randomKey makes a pseudonym key for the demo, which has no secret store.
func randomKey() []byte {
	b := make([]byte, 32)
	if _, err := cryptoRead(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return []byte(hex.EncodeToString(b))
}

var cryptoRead = cryptorand.Read

// applyRuntime puts the memory policy in force for a command that runs
// for long (run, demo, gateway, loadtest), logs it and returns it as one
// line.
func applyRuntime(cfg Config, log *slog.Logger) (string, error) {
	a, err := memlimit.Apply(cfg.Runtime, os.Getenv, "/sys/fs/cgroup", "/proc/self/cgroup", "/proc/meminfo")
	if err != nil {
		return "", fmt.Errorf("invalid configuration: %w", err)
	}
	limit, pace := "none", "off"
	if a.Limit != math.MaxInt64 {
		limit = strconv.FormatInt(a.Limit>>20, 10) + "MiB"
	}
	if a.GCPercent >= 0 {
		pace = strconv.Itoa(a.GCPercent)
	}
	log.Info("memory policy", "memory_limit", limit, "limit_from", a.LimitFrom, "gc_percent", pace, "gc_from", a.GCFrom)
	return fmt.Sprintf("memory limit %s (%s), gc_percent %s (%s)", limit, a.LimitFrom, pace, a.GCFrom), nil
}

// goCollector is the Go runtime's collector of every process's /metrics:
// the memory statistics, and the memory policy in force (go_gc_gogc_percent,
// go_gc_gomemlimit_bytes), so that a heap near its limit shows against it.
func goCollector() prometheus.Collector {
	return collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
		collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/(gogc:percent|gomemlimit:bytes)$`)},
	))
}
