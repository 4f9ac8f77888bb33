package kafkaio

import (
	"context"
	"errors"
	"fmt"

	"github.com/segmentio/kafka-go"
)

// EnsureTopics creates the topics that do not exist yet with the configured
// partitions and replication. Existing topics are left as they are.
func EnsureTopics(ctx context.Context, c Config, names ...string) error {
	req := &kafka.CreateTopicsRequest{}
	for _, n := range names {
		req.Topics = append(req.Topics, kafka.TopicConfig{
			Topic:             c.Topic(n),
			NumPartitions:     c.Partitions,
			ReplicationFactor: c.ReplicationFactor,
		})
	}
	res, err := c.Client().CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("cannot create topics: %w", err)
	}
	for name, terr := range res.Errors {
		if terr != nil && !errors.Is(terr, kafka.TopicAlreadyExists) {
			return fmt.Errorf("cannot create topic %s: %w", name, terr)
		}
	}
	return nil
}

// EnsureTopic creates topic name with the given partition count when it
// does not exist yet; an existing topic is left as it is.
func EnsureTopic(ctx context.Context, c Config, name string, partitions int) error {
	c.Partitions = partitions
	return EnsureTopics(ctx, c, name)
}

// AllTopics lists every topic citywatch uses.
var AllTopics = []string{
	TopicCamera, TopicCheckpoint, TopicFuel, TopicDrone, TopicPatrol,
	TopicAlerts, TopicDispatches, TopicDLQ, TopicEvents, TopicFuelEvents,
}
