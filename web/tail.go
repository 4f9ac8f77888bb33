package web

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/kafkaio"
)

// tailTopic reads every partition of topic without a consumer group, from
// the first message written at or after since to the end and then as
// messages come, calling handle for each in partition order. It returns
// when ctx is done, after every partition reader has stopped. Partitions
// added to the topic while it runs are not read (a restart reads them).
func tailTopic(ctx context.Context, kc kafkaio.Config, topic string, since time.Time, handle func(*kafka.Message)) error {
	parts, err := partitions(ctx, kc, topic)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(parts))
	for i, p := range parts {
		wg.Go(func() { errs[i] = tailPartition(ctx, kc, topic, p, since, handle) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func partitions(ctx context.Context, kc kafkaio.Config, topic string) ([]int, error) {
	res, err := kc.Client().Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("cannot read partitions of %s: %w", topic, err)
	}
	for _, t := range res.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return nil, fmt.Errorf("cannot read partitions of %s: %w", topic, t.Error)
		}
		out := make([]int, 0, len(t.Partitions))
		for _, p := range t.Partitions {
			out = append(out, p.ID)
		}
		return out, nil
	}
	return nil, fmt.Errorf("cannot read partitions of %s: no such topic", topic)
}

func tailPartition(ctx context.Context, kc kafkaio.Config, topic string, p int, since time.Time, handle func(*kafka.Message)) error {
	r := kc.NewPartitionReader(topic, p)
	defer r.Close()
	// The first offset at or after since; retried while the broker is not
	// reachable yet.
	for {
		off, err := kafkaio.OffsetAt(ctx, kc, topic, p, since)
		if err == nil {
			err = r.SetOffset(off)
		}
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("cannot read %s/%d: %w", topic, p, err)
		}
		handle(&m)
	}
}

// patrolPositionType is how a patrol.position event starts its type field
// in the normalised JSON, to skip the other events without decoding them.
var patrolPositionType = []byte(`"type":"patrol.position"`)

// runTails feeds the live view from the alerts, dispatches and events
// topics until ctx is done.
func (s *Server) runTails(ctx context.Context) error {
	kc := *s.kafka
	now := s.now()
	alerts, dispatches, events := kc.Topic(kafkaio.TopicAlerts), kc.Topic(kafkaio.TopicDispatches), kc.Topic(kafkaio.TopicEvents)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Go(func() {
		errs[0] = tailTopic(ctx, kc, alerts, now.Add(-s.cfg.Lookback), func(m *kafka.Message) {
			a, err := event.DecodeAlert(m.Value)
			if err != nil {
				s.m.tailErrors.WithLabelValues(alerts).Inc()
				return
			}
			s.live.seen(alerts, m.Time)
			s.live.addAlert(a)
		})
	})
	wg.Go(func() {
		errs[1] = tailTopic(ctx, kc, dispatches, now.Add(-s.cfg.Lookback), func(m *kafka.Message) {
			d, err := event.DecodeDispatch(m.Value)
			if err != nil {
				s.m.tailErrors.WithLabelValues(dispatches).Inc()
				return
			}
			s.live.seen(dispatches, m.Time)
			s.live.addDispatch(d)
		})
	})
	wg.Go(func() {
		var (
			mu  sync.Mutex // the decoder is shared by the partition readers
			dec event.Decoder
			e   event.Event
		)
		errs[2] = tailTopic(ctx, kc, events, now.Add(-s.cfg.PositionLookback), func(m *kafka.Message) {
			if !bytes.Contains(m.Value, patrolPositionType) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			e.Reset()
			if err := dec.DecodeNormalized(m.Value, &e); err != nil || e.Type != event.TypePatrolPosition {
				s.m.tailErrors.WithLabelValues(events).Inc()
				return
			}
			s.live.seen(events, m.Time)
			s.live.addPosition(&e)
		})
	})
	wg.Wait()
	return errors.Join(errs...)
}
