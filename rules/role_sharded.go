package rules

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/kafkaio"
)

// TopicShards is the coordination topic of a scaled-out rules role
// (RoleConfig.Shards): one partition per shard and no messages. Its
// consumer group hands each process its shards and moves them when a
// process comes or goes.
const TopicShards = "internal.rules.shards"

// runSharded is Run in scale-out mode: the processes of the group share
// the shards of the rules' keys (Shards). For every generation of the
// group (a join, a leave, a crash noticed by the broker) the process builds
// a fresh engine that owns the shards it was assigned, restores it as a
// start does (the alerts of its shards read back, the input replayed), and
// then follows the input live until the generation ends.
//
// Every process reads the whole input, in the order one process would,
// and evaluates only the keys it owns. Reading the input whole rather than
// from repartition topics keeps what makes the alerts right: each process
// sees every partition's event times, so its watermark, its late events
// and its timers are exactly those of one process, and a key's events
// reach its state in input order with no second hop to add latency or
// duplicate a message when a forwarding process crashes. Reading and
// decoding every event in every process costs about 0.4–0.9 µs per event
// (BENCHMARKS.md); evaluation is shared.
//
// The input position is not committed: a generation starts from the replay
// horizon, as a start does, and the alerts topic read back tells what was
// already raised. Input older than the horizon that no process evaluated
// (all of them down for longer than a horizon) is not evaluated; the sink
// stores it regardless.
func (r *Role) runSharded(ctx context.Context) error {
	return kafkaio.Share(ctx, r.kc, r.cfg.Group, TopicShards, r.cfg.Shards, r.log, r.runGeneration)
}

// runGeneration runs one generation of the group with the shards owned,
// until gctx ends. Stopping order: the partition readers stop; the alerts
// still queued are written; then it returns and the group may rebalance,
// so that the next owner of a shard reads back every alert this process
// raised for it.
func (r *Role) runGeneration(gctx context.Context, generation int32, owned []int) error {
	// Writes outlive the generation: one cancelled half-way may have
	// landed, and written again it would be a duplicate (see write).
	ctx := context.WithoutCancel(gctx)
	gctx, cancel := context.WithCancel(gctx)
	defer cancel()
	rs := r.ruleSet()
	eng, err := New(r.ecfg, rs, r.metrics)
	if err != nil {
		return err
	}
	eng.SetShards(NewShards(r.cfg.Shards, owned))
	r.mu.Lock()
	r.eng = eng
	r.check = nil
	r.catchUp = catchUp{stale: catchUpStale}
	r.mu.Unlock()
	defer r.endGeneration(ctx)
	r.log.Info("rules shards assigned", "generation", generation, "shards", len(owned), "of", r.cfg.Shards)
	if r.metrics != nil {
		r.metrics.shards.Set(float64(len(owned)))
	}
	if len(owned) == 0 {
		<-gctx.Done()
		return nil
	}

	if err := r.restore(gctx); err != nil {
		if gctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := r.write(ctx); err != nil {
		if gctx.Err() != nil {
			return nil
		}
		return err
	}
	r.markRestored()
	if r.assigned != nil {
		r.assigned(owned)
	}

	parts, err := kafkaio.Partitions(gctx, r.kc, r.eventsTopic)
	if err != nil {
		if gctx.Err() != nil {
			return nil
		}
		return err
	}
	msgs := make(chan kafka.Message, r.kc.QueueCapacity)
	var readers sync.WaitGroup
	for _, p := range parts {
		var lag prometheus.Gauge
		if r.metrics != nil {
			lag = r.metrics.inputLag.WithLabelValues(strconv.Itoa(p))
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			kafkaio.Follow(gctx, r.kc, r.eventsTopic, p, r.skipBelow[p], r.log, func(m *kafka.Message) {
				if lag != nil {
					lag.Set(float64(m.HighWaterMark - m.Offset - 1))
				}
				select {
				case msgs <- *m:
				case <-gctx.Done():
				}
			})
		}()
	}

	h := &handler{r: r, dec: event.Decoder{Now: r.now}}
	tick := time.NewTicker(r.tickEvery)
	defer tick.Stop()
	var werr error
loop:
	for {
		in := msgs
		if h.Full() {
			in = nil // writes are failing: input waits, retried at the tick
		}
		select {
		case m := <-in:
			h.Add(&m)
			// Write as soon as the input queue is drained (or the pending
			// bound is reached): alerts wait for no timer.
			if len(msgs) == 0 || h.Full() {
				if werr = r.write(ctx); errors.Is(werr, errCrashed) {
					return werr
				} else if werr != nil && gctx.Err() == nil {
					r.log.Warn("cannot write alerts; retrying", "err", werr)
				}
			}
		case <-tick.C:
			r.advance(r.now())
			if werr = r.write(ctx); errors.Is(werr, errCrashed) {
				return werr
			} else if werr != nil && gctx.Err() == nil {
				r.log.Warn("cannot write alerts; retrying at the next tick", "err", werr)
			}
		case <-gctx.Done():
			break loop
		}
	}
	readers.Wait()
	return nil
}

// endGeneration writes what the generation's engine queued, so that the
// next owner of its shards reads it back, and empties the queue: a
// message that cannot be written in time is left for the next owner to
// raise again (its restore finds it missing).
func (r *Role) endGeneration(ctx context.Context) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.write(sctx); err != nil {
		n := r.outbox.Drop()
		r.log.Warn("cannot write alerts at the end of a generation; the next owner raises them", "alerts", n, "err", err)
	}
}

// errCrashed wraps the crash hook's error in a scaled-out role.
var errCrashed = errors.New("crashed before writing alerts")

// write writes the queued alerts, after asking the crash hook (failure
// tests): a crash there loses them, as a process killed before its write
// would, for the next owner of the shards to raise again. The end of a
// generation does not cancel a write: one cancelled half-way may have
// landed, and written again it would be a duplicate; only ctx (the
// role's) and the write timeout do.
func (r *Role) write(ctx context.Context) error {
	if r.crashHook != nil {
		if err := r.crashHook(); err != nil {
			return fmt.Errorf("%w: %w", errCrashed, err)
		}
	}
	return r.flushPending(ctx)
}

// ruleSet returns the rule set to build a generation's engine with: the
// newest one loaded.
func (r *Role) ruleSet() *RuleSet {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.eng.installPending()
	return r.eng.RuleSet()
}
