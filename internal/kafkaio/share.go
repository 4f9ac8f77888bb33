package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
)

// ShareFunc runs one generation of a Share: ctx ends when the generation
// does (a process joined or left) or when the Share's ctx does, and owned
// are the parts this process holds in it, sorted. The group does not
// rebalance until it returns, so whatever it must write for the parts'
// next owner it writes before returning. An error stops the Share.
type ShareFunc func(ctx context.Context, generation int32, owned []int) error

// Share splits n parts of some work (key shards, districts) among the
// processes of a consumer group and runs f for every generation of the
// group until ctx is done. The parts are the partitions of topic (without
// the prefix), a coordination topic created with n partitions that carries
// no messages: Kafka's group protocol does the membership, failure
// detection and assignment, and each process keeps its own state of the
// parts it is given, rebuilt by f at the start of each generation.
func Share(ctx context.Context, kc Config, group, topic string, n int, log *slog.Logger, f ShareFunc) error {
	if err := EnsureTopic(ctx, kc, topic, n); err != nil {
		return err
	}
	full := kc.Topic(topic)
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                group,
		Brokers:           kc.Brokers,
		Dialer:            kc.Dialer(),
		Topics:            []string{full},
		HeartbeatInterval: kc.HeartbeatInterval,
		SessionTimeout:    kc.SessionTimeout,
		RebalanceTimeout:  kc.RebalanceTimeout,
		JoinGroupBackoff:  time.Second,
		StartOffset:       kafka.FirstOffset,
		Timeout:           10 * time.Second,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			log.Warn(group + ": " + fmt.Sprintf(msg, args...))
		}),
	})
	if err != nil {
		return fmt.Errorf("cannot join group %s: %w", group, err)
	}
	defer cg.Close()
	for {
		gen, err := cg.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				return nil
			}
			// The group retries by itself (a rebalance under way, a
			// coordinator moving); the error is only news.
			log.Warn("cannot join group yet; retrying", "group", group, "err", err)
			continue
		}
		var owned []int
		for _, pa := range gen.Assignments[full] {
			owned = append(owned, pa.ID)
		}
		sort.Ints(owned)
		if err := runGeneration(ctx, gen, owned, f); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// runGeneration runs f for gen and holds the group's next rebalance until
// f has returned.
func runGeneration(ctx context.Context, gen *kafka.Generation, owned []int, f ShareFunc) error {
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	released := make(chan struct{})
	gen.Start(func(genCtx context.Context) {
		select {
		case <-genCtx.Done():
			cancel()
		case <-gctx.Done():
		}
		<-released
	})
	defer close(released)
	return f(gctx, gen.ID, owned)
}
