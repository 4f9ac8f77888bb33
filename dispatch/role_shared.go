package dispatch

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/kafkaio"
)

// TopicDistricts is the coordination topic of dispatchers that share the
// districts (Config.ShareDistricts): one partition per district of the
// city, in the order of the city file, and no messages. Its consumer group
// hands each dispatcher its districts.
const TopicDistricts = "internal.dispatch.districts"

// runShared is Run with Config.ShareDistricts. For every generation of the
// group the process builds a fresh engine for the districts it was
// assigned, restores it from the topics as a start does (every dispatcher
// writes and reads the same topics, so the state of a district taken over
// is rebuilt whole: its open dispatches, their timers, the units taken),
// offers it the alerts read back so that one that reached no dispatcher
// before a rebalance is dispatched now, and then follows the units, the
// dispatches and the alerts live until the generation ends. The alerts
// are read whole, without committing a position: the alerts of the
// lookback read back at each generation say what is left to do, and an
// alert that already has dispatches is never dispatched again.
//
// Stopping order within a generation: the tail readers and the ticker
// stop; what the engine queued is written; only then may the group
// rebalance, so that the next owner of a district reads back every
// dispatch this process made.
func (r *Role) runShared(ctx context.Context) error {
	n := len(r.city.Districts)
	if n == 0 {
		return errors.New("cannot share districts: the city has none")
	}
	return kafkaio.Share(ctx, r.kc, r.cfg.Group, TopicDistricts, n, r.log, func(gctx context.Context, generation int32, parts []int) error {
		var owned []string
		for _, p := range parts {
			if p < n {
				owned = append(owned, r.city.Districts[p].Code)
			}
		}
		slices.Sort(owned)
		return r.runGeneration(gctx, generation, owned)
	})
}

// runGeneration runs one generation with the districts owned until gctx
// ends; what it queued is written before it returns (endGeneration).
func (r *Role) runGeneration(gctx context.Context, generation int32, owned []string) error {
	// Writes outlive the generation: the next owner must read them back.
	ctx := context.WithoutCancel(gctx)
	cfg := r.cfg
	cfg.ShareDistricts, cfg.Districts = false, owned
	if len(owned) == 0 {
		cfg.Districts = []string{"-"} // no district: dispatch nothing, still follow the units
	}
	eng, err := NewEngine(cfg, r.city, r.metrics, r.log)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.eng = eng
	r.outbox.Drop()
	r.out.Reset()
	r.mu.Unlock()
	defer r.endGeneration(ctx)
	r.log.Info("dispatch districts assigned", "generation", generation, "districts", owned)

	ends, alerts, err := r.restore(gctx)
	if err != nil {
		if gctx.Err() != nil {
			return nil
		}
		return err
	}
	// Alerts that reached no dispatcher before the rebalance: those with
	// dispatches, resolved, too old or of other districts are skipped.
	start := r.now()
	r.mu.Lock()
	for i := range alerts {
		r.eng.Alert(start, &alerts[i], &r.out)
	}
	r.queueLocked()
	r.mu.Unlock()
	if err := r.flushPending(ctx); err != nil {
		if gctx.Err() != nil {
			return nil
		}
		return err
	}
	r.markRestored()
	if r.assigned != nil {
		r.assigned(owned)
	}

	var bg sync.WaitGroup
	for p, off := range ends[r.eventsTopic] {
		bg.Go(func() { r.tail(gctx, r.eventsTopic, p, off, r.onEvent()) })
	}
	for p, off := range ends[r.dispatchesTopic] {
		bg.Go(func() { r.tail(gctx, r.dispatchesTopic, p, off, r.onDispatch) })
	}
	for p, off := range ends[r.alertsTopic] {
		bg.Go(func() { r.tail(gctx, r.alertsTopic, p, off, r.onAlert) })
	}
	bg.Go(func() { r.tickLoop(gctx) })
	<-gctx.Done()
	bg.Wait()
	return nil
}

// onAlert takes an alert read live by a dispatcher sharing the districts
// and writes what the engine decides at once.
func (r *Role) onAlert(m *kafka.Message) {
	a, err := event.DecodeAlert(m.Value)
	if err != nil {
		r.metrics.undecodable.WithLabelValues("alerts").Inc()
		return
	}
	r.mu.Lock()
	r.eng.Alert(r.now(), &a, &r.out)
	r.queueLocked()
	n := r.outbox.Len()
	r.mu.Unlock()
	if n > 0 {
		if err := r.flushPending(context.Background()); err != nil {
			r.log.Warn("cannot write dispatches; retrying at the next tick", "err", err)
		}
	}
}

// endGeneration writes what the generation's engine queued, so that the
// next owner of its districts reads it back; what cannot be written in
// time is left for that owner to decide again.
func (r *Role) endGeneration(ctx context.Context) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.flushPending(sctx); err != nil {
		n := r.outbox.Drop()
		r.log.Warn("cannot write dispatches at the end of a generation; the next owner decides again", "messages", n, "err", err)
	}
}

func (r *Role) markRestored() {
	if r.restored != nil {
		r.restoredOnce.Do(func() { close(r.restored) })
	}
}
