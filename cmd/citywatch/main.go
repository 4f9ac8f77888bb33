// Command citywatch is the one binary of citywatch: it parses flags, loads
// the configuration, builds the roles and runs them. Everything else lives
// in the domain packages.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

type command struct {
	name, args, summary string
	run                 func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands is the list of CONTRACT.md section 9; those not built yet say
// so when run.
var commands []command

func init() {
	commands = []command{
		{"demo", "[--scale F] [--speedup F] [--scenario NAME] [--no-sink]", "the whole system in one process: embedded Kafka-protocol broker, simulated devices, every role, web UI on :8080", cmdDemo},
		{"run", "--roles ingest,rules,dispatch,sink,web [--check-config]", "the chosen roles against an external Kafka cluster and ClickHouse", cmdRun},
		{"gateway", "[--check-config]", "the RTP and GA/T 1400 gateway", cmdGateway},
		{"sim", "[--scale F] [--rate F] [--duration D] [--speedup F] [--seed N] [--scenario FILE] [--truth FILE] [--gateway-rtp ADDR --gateway-viid URL]", "the simulators against a Kafka cluster, optionally with a scenario of planted incidents", cmdSim},
		{"migrate", "[--check-config]", "create or upgrade the ClickHouse schema", cmdMigrate},
		{"rules", "test FILE…", "run rule test files (events in, expected alerts out)", cmdRules},
		{"loadtest", "[--duration D] [--rate N]", "end-to-end load run: broker in process, ingest and sink into ClickHouse; prints throughput and latency", cmdLoadtest},
		{"help", "", "this list", nil},
	}
}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] || c.run == nil {
			continue
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := c.run(ctx, args[1:], stdout, stderr); err != nil {
			fmt.Fprintf(stderr, "citywatch %s: %v\n", c.name, err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "citywatch: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "citywatch: real-time public-security stream processor")
	fmt.Fprintln(w, "\nUsage: citywatch COMMAND [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  citywatch %s %s\n      %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintln(w, "\nEnvironment: CITYWATCH_KAFKA_BROKERS, CITYWATCH_CLICKHOUSE_ADDR, CITYWATCH_CLICKHOUSE_DB,")
	fmt.Fprintln(w, "CITYWATCH_CLICKHOUSE_USER, CITYWATCH_CLICKHOUSE_PASSWORD, CITYWATCH_HTTP_ADDR, CITYWATCH_CONFIG,")
	fmt.Fprintln(w, "CITYWATCH_TOPIC_PREFIX, CITYWATCH_PSEUDONYM_KEY, CITYWATCH_TZ, CITYWATCH_HOTLIST, CITYWATCH_WATCHLIST;")
	fmt.Fprintln(w, "connections: CITYWATCH_KAFKA_TLS, _TLS_CA, _TLS_CERT, _TLS_KEY, CITYWATCH_KAFKA_SASL_MECHANISM, _USER,")
	fmt.Fprintln(w, "_PASSWORD, CITYWATCH_CLICKHOUSE_TLS, _TLS_CA, CITYWATCH_ALLOW_PLAINTEXT (see README).")
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}
