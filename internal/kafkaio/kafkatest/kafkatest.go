// Package kafkatest gives tests an in-process Kafka-protocol broker with
// every citywatch topic, stopped when the test ends.
package kafkatest

import (
	"testing"

	"citywatch/internal/kafkaio"
)

// Broker starts an embedded broker whose topics have partitions partitions
// and returns a Config with defaults that points at it, but for
// compression: none, because under the race detector lz4's buffers cost
// most of a test's CPU (the defaults' lz4 is what production runs; a
// test that needs it sets it).
func Broker(t testing.TB, partitions int) kafkaio.Config {
	t.Helper()
	kc := kafkaio.Config{Partitions: partitions, Compression: "none"}
	kc.SetDefaults()
	b, err := kafkaio.StartEmbedded(kc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	kc.Brokers = b.Brokers()
	return kc
}
