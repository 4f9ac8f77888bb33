package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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
// the prefix), created with n partitions when missing: Kafka's group
// protocol does the membership, failure detection and assignment, and each
// process keeps its own state of the parts it is given, rebuilt by f at
// the start of each generation. Share reads none of the topic's messages:
// it may be a coordination topic that carries none (the dispatchers'
// districts) or one that f reads itself (the rules' repartition topic).
func Share(ctx context.Context, kc Config, group, topic string, n int, log *slog.Logger, f ShareFunc) error {
	if err := EnsureTopic(ctx, kc, topic, n); err != nil {
		return err
	}
	return Member(ctx, kc, group, kc.Topic(topic), log, func(ctx context.Context, gen *kafka.Generation, owned []kafka.PartitionAssignment) error {
		ids := make([]int, len(owned))
		for i, pa := range owned {
			ids[i] = pa.ID
		}
		return f(ctx, gen.ID, ids)
	})
}

// MemberFunc runs one generation of a Member: ctx ends when the
// generation does, owned are the partitions assigned to this process
// (sorted, each with the group's committed offset, or kafka.FirstOffset
// where it has none), and gen commits offsets for them. The group does
// not rebalance until it returns.
type MemberFunc func(ctx context.Context, gen *kafka.Generation, owned []kafka.PartitionAssignment) error

// Member makes this process a member of group on topic (a full name) and
// runs f for every generation of the group until ctx is done, for a member
// that reads its partitions itself (PartitionReader, Follow) and commits
// through the generation. An error of f stops it.
func Member(ctx context.Context, kc Config, group, topic string, log *slog.Logger, f MemberFunc) error {
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                group,
		Brokers:           kc.Brokers,
		Dialer:            kc.Dialer(),
		Topics:            []string{topic},
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
		owned := slices.Clone(gen.Assignments[topic])
		slices.SortFunc(owned, func(a, b kafka.PartitionAssignment) int { return a.ID - b.ID })
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
func runGeneration(ctx context.Context, gen *kafka.Generation, owned []kafka.PartitionAssignment, f MemberFunc) error {
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
	return f(gctx, gen, owned)
}
