package simulators

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"

	"citywatch/internal/kafkaio"
)

// ReadAlertsTopic reads the alert messages of topic from the first offset to
// the end offset each partition had when it was called, with one reader
// per partition and no consumer group, so that it commits nothing and
// disturbs no one. Messages that are not alerts are counted in bad and
// skipped. Partitions are read one after the other; ctx bounds the whole.
// kc gives the brokers and the connections' TLS and SASL.
func ReadAlertsTopic(ctx context.Context, kc kafkaio.Config, topic string) (alerts []Alert, bad int, err error) {
	client := kc.Client()
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, 0, fmt.Errorf("cannot read metadata of %s: %w", topic, err)
	}
	var reqs []kafka.OffsetRequest
	for _, t := range meta.Topics {
		if t.Error != nil {
			return nil, 0, fmt.Errorf("cannot read metadata of %s: %w", topic, t.Error)
		}
		for _, p := range t.Partitions {
			reqs = append(reqs, kafka.FirstOffsetOf(p.ID), kafka.LastOffsetOf(p.ID))
		}
	}
	if len(reqs) == 0 {
		return nil, 0, fmt.Errorf("topic %s has no partitions", topic)
	}
	res, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, 0, fmt.Errorf("cannot list offsets of %s: %w", topic, err)
	}
	parts := res.Topics[topic]
	slices.SortFunc(parts, func(a, b kafka.PartitionOffsets) int { return a.Partition - b.Partition })
	for _, po := range parts {
		if po.Error != nil {
			return nil, 0, fmt.Errorf("cannot list offsets of %s/%d: %w", topic, po.Partition, po.Error)
		}
		if po.LastOffset <= po.FirstOffset {
			continue
		}
		err := readPartition(ctx, kc, topic, po.Partition, po.FirstOffset, po.LastOffset, func(m *kafka.Message) {
			a, err := ParseAlert(m.Value)
			if err != nil {
				bad++
				return
			}
			alerts = append(alerts, a)
		})
		if err != nil {
			return nil, 0, err
		}
	}
	return alerts, bad, nil
}

// readPartition calls f with every message of topic/partition in
// [first, end).
func readPartition(ctx context.Context, kc kafkaio.Config, topic string, partition int, first, end int64, f func(*kafka.Message)) error {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   kc.Brokers,
		Dialer:    kc.Dialer(),
		Topic:     topic,
		Partition: partition,
		MinBytes:  1,
		MaxBytes:  16 << 20,
		MaxWait:   500 * time.Millisecond,
	})
	defer r.Close()
	if err := r.SetOffset(first); err != nil {
		return fmt.Errorf("cannot read %s/%d: %w", topic, partition, err)
	}
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return fmt.Errorf("cannot read %s/%d at offset %d of %d: %w", topic, partition, r.Offset(), end, err)
		}
		f(&m)
		if m.Offset+1 >= end {
			return nil
		}
	}
}
