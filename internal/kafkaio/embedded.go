package kafkaio

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Embedded is an in-process broker speaking the real Kafka protocol, for
// the demo and the tests. Production uses Apache Kafka.
type Embedded struct {
	cluster *kfake.Cluster
}

// StartEmbedded starts an in-process broker on a loopback port with every
// citywatch topic (full names from c) created with c.Partitions partitions.
func StartEmbedded(c Config) (*Embedded, error) {
	topics := c.Topics(AllTopics...)
	cl, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.SeedTopics(int32(c.Partitions), topics...),
		kfake.AllowAutoTopicCreation(),
	)
	if err != nil {
		return nil, fmt.Errorf("cannot start embedded broker: %w", err)
	}
	return &Embedded{cluster: cl}, nil
}

// Brokers returns the broker addresses.
func (e *Embedded) Brokers() []string { return e.cluster.ListenAddrs() }

// Use points c at the broker: its addresses, and no TLS or SASL, which
// the in-process broker on loopback does not speak (a TLS or SASL setting
// in the environment is for the real cluster).
func (e *Embedded) Use(c *Config) {
	c.Brokers = e.Brokers()
	c.TLS, c.SASL = TLS{}, SASL{}
}

// Close stops the broker.
func (e *Embedded) Close() { e.cluster.Close() }

// Empty deletes every record of topic (a full name) with n partitions, as
// retention would: its offsets go on from where they were. Load runs use
// it to start a round on an empty topic.
func (e *Embedded) Empty(topic string, n int) error {
	for p := range n {
		if err := e.cluster.DeleteRecords(topic, int32(p), -1); err != nil {
			return fmt.Errorf("cannot empty %s/%d: %w", topic, p, err)
		}
	}
	return nil
}
