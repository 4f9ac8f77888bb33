package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestGatewayCheckConfig(t *testing.T) {
	t.Setenv("CITYWATCH_CONFIG", "")
	t.Setenv("CITYWATCH_KAFKA_BROKERS", "127.0.0.1:9092")
	var out, errOut bytes.Buffer
	if err := cmdGateway(t.Context(), []string{"--check-config"}, &out, &errOut); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	if strings.TrimSpace(out.String()) != "configuration ok" {
		t.Errorf("output %q", out.String())
	}
	t.Setenv("CITYWATCH_KAFKA_BROKERS", "")
	if err := cmdGateway(t.Context(), []string{"--check-config"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "kafka.brokers") {
		t.Errorf("without brokers: %v", err)
	}
}
