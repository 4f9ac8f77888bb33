package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"citywatch/event"
	"citywatch/internal/chtest"
	"citywatch/internal/kafkaio"
	"citywatch/simulators"
)

// mixedStream is every event type with bad input, resends and late events
// between them, plus the hand-made cases the generator does not make.
func mixedStream(n int, seed uint64) []simulators.Message {
	g := simulators.NewGenerator(simulators.GeneratorConfig{Seed: seed, BadShare: 0.08, DupShare: 0.05, LateShare: 0.1})
	msgs := make([]simulators.Message, 0, n+8)
	for range n {
		msgs = append(msgs, g.Next())
	}
	now := time.Now().Format(time.RFC3339)
	huge := `{"id":"huge","type":"device.heartbeat","device_id":"cam-1","time":"` + now + `","lat":32,"lon":112,"pad":"` + strings.Repeat("x", 200<<10) + `"}`
	// A valid fuel purchase on the camera topic: the wrong topic, with
	// personal data in the rejected payload.
	var wrongTopic simulators.Message
	for {
		m := g.Next()
		if m.Type == "fuel.purchase" && m.Want == simulators.WantEvent {
			wrongTopic = m
			break
		}
	}
	wrongTopic.Topic, wrongTopic.Want, wrongTopic.ID = "camera", simulators.WantReject, ""
	msgs = append(msgs,
		simulators.Message{Topic: "camera", Key: []byte("cam-1"), Value: []byte(huge), Want: simulators.WantReject},
		simulators.Message{Topic: "camera", Key: []byte("cam-1"), Value: []byte{0xff, 0xfe, '{'}, Want: simulators.WantReject},
		simulators.Message{Topic: "fuel", Key: nil, Value: nil, Want: simulators.WantReject},
		wrongTopic,
	)
	return msgs
}

func TestMixedStreamStoredExactlyOnce(t *testing.T) {
	chCfg := chtest.Config(t)
	ctx := t.Context()
	p := newPipeline(t, chCfg)
	db := p.openDB(ctx)

	msgs := mixedStream(4000, 1)
	want := expect(msgs)
	if want.rejected < 100 || len(want.personal) < 100 {
		t.Fatalf("stream too tame: %d rejected, %d personal values", want.rejected, len(want.personal))
	}
	p.produce(ctx, msgs)

	stopIngest := p.start(ctx, "ingest", p.newIngest(p.reg).Run)
	stopSink := p.start(ctx, "sink", p.newSink(db, p.reg).Run)
	waitStored(ctx, t, db, want, 90*time.Second)
	if err := stopSink(); err != nil {
		t.Errorf("sink: %v", err)
	}
	if err := stopIngest(); err != nil {
		t.Errorf("ingest: %v", err)
	}

	// Every rejected message is in the DLQ with a reason. The DLQ is
	// at least once, like every topic: a rebalance before a commit writes
	// a record again, and its readers (the sink among them) identify a
	// record by the topic, partition and offset it rejects.
	dlq := readTopic(ctx, t, p.kc, p.kc.Topic(kafkaio.TopicDLQ))
	var dlqText strings.Builder
	rejected := map[string]bool{}
	for _, m := range dlq {
		var r event.Rejected
		if err := event.DecodeRejected(m.Value, &r); err != nil {
			t.Fatalf("cannot decode DLQ record %s: %v", m.Value, err)
		}
		rejected[fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset)] = true
		if r.Error == "" || r.Code == "" || r.Topic == "" {
			t.Errorf("DLQ record without reason: %+v", r)
		}
		if len(m.Value) > 1<<20 {
			t.Errorf("DLQ record of %d bytes: payload not bounded", len(m.Value))
		}
		dlqText.Write(m.Value)
		dlqText.Write(r.Payload)
		dlqText.WriteString(r.Error)
	}

	if len(rejected) != want.rejected {
		t.Errorf("DLQ holds %d distinct rejected messages, want %d", len(rejected), want.rejected)
	}

	// No personal field appears unmasked anywhere downstream.
	events := readTopic(ctx, t, p.kc, p.kc.Topic(kafkaio.TopicEvents))
	var eventsText strings.Builder
	for _, m := range events {
		eventsText.Write(m.Value)
	}
	places := map[string]string{
		"ClickHouse":       dumpTables(ctx, t, chCfg),
		"the DLQ":          dlqText.String(),
		"the events topic": eventsText.String(),
		"logs":             p.logs.String(),
		"metrics":          gatherMetrics(t, p.reg),
	}
	for _, v := range want.personal {
		for where, text := range places {
			if strings.Contains(text, v) {
				t.Errorf("personal value %s… appears unmasked in %s", v[:3], where)
			}
		}
	}
	if !strings.Contains(places["ClickHouse"], "********") {
		t.Error("no masked ID number in ClickHouse: fuel purchases not stored?")
	}
}

func TestSinkCrashBetweenInsertAndCommit(t *testing.T) {
	chCfg := chtest.Config(t)
	ctx := t.Context()
	p := newPipeline(t, chCfg)
	db := p.openDB(ctx)

	msgs := mixedStream(3000, 2)
	want := expect(msgs)
	p.produce(ctx, msgs)
	stopIngest := p.start(ctx, "ingest", p.newIngest(p.reg).Run)
	defer stopIngest()

	// The first sink crashes after its first successful insert, before the
	// commit: the rows are in ClickHouse, the offsets are not committed.
	var crashes atomic.Int32
	crashed := p.newSink(db, prometheus.NewRegistry())
	crashed.SetCrashHook(func() error {
		crashes.Add(1)
		return errors.New("killed")
	})
	if err := crashed.Run(ctx); err == nil {
		t.Fatal("crashing sink returned nil")
	}
	if crashes.Load() < 1 {
		t.Fatalf("crash hook ran %d times, want at least 1", crashes.Load())
	}
	// The crashing member may have held only DLQ partitions, so count
	// both kinds of rows.
	before, err := db.EventIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rejected, err := countRejected(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(before)+len(rejected) == 0 {
		t.Fatal("nothing inserted before the crash")
	}

	// A new sink replays from the last commit: nothing lost, nothing twice.
	stopSink := p.start(ctx, "sink", p.newSink(db, prometheus.NewRegistry()).Run)
	waitStored(ctx, t, db, want, 90*time.Second)
	if err := stopSink(); err != nil {
		t.Errorf("sink: %v", err)
	}
}

func TestIngestCrashBetweenWriteAndCommit(t *testing.T) {
	chCfg := chtest.Config(t)
	ctx := t.Context()
	p := newPipeline(t, chCfg)
	db := p.openDB(ctx)

	msgs := mixedStream(3000, 3)
	want := expect(msgs)
	p.produce(ctx, msgs)

	crashed := p.newIngest(prometheus.NewRegistry())
	crashed.SetCrashHook(func() error { return errors.New("killed") })
	if err := crashed.Run(ctx); err == nil {
		t.Fatal("crashing ingest returned nil")
	}
	stopIngest := p.start(ctx, "ingest", p.newIngest(prometheus.NewRegistry()).Run)
	stopSink := p.start(ctx, "sink", p.newSink(db, p.reg).Run)
	waitStored(ctx, t, db, want, 90*time.Second)
	if err := stopSink(); err != nil {
		t.Errorf("sink: %v", err)
	}
	if err := stopIngest(); err != nil {
		t.Errorf("ingest: %v", err)
	}
}

func TestGracefulShutdownWhileBusy(t *testing.T) {
	chCfg := chtest.Config(t)
	ctx := t.Context()
	p := newPipeline(t, chCfg)
	db := p.openDB(ctx)

	stopIngest := p.start(ctx, "ingest", p.newIngest(p.reg).Run)
	stopSink := p.start(ctx, "sink", p.newSink(db, p.reg).Run)
	g := simulators.NewGenerator(simulators.GeneratorConfig{Seed: 4})
	pctx, stopPub := context.WithTimeout(ctx, 2*time.Second)
	if err := simulators.Publish(pctx, g, p.writer, p.kc.TopicPrefix, 5000); err != nil {
		t.Fatal(err)
	}
	stopPub()
	// Stop mid-stream: both roles return (within the test's one-minute
	// guard) with no error, and TestMain checks that no goroutine is left.
	if err := stopIngest(); err != nil {
		t.Errorf("ingest: %v", err)
	}
	if err := stopSink(); err != nil {
		t.Errorf("sink: %v", err)
	}
}
