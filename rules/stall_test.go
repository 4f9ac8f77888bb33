package rules

import (
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"citywatch/internal/kafkaio"
	"citywatch/internal/kafkaio/kafkatest"
)

// TestStallWatch walks a group through a stall on a real broker: a
// partition with uncommitted messages whose committed offset stays put
// holds at its first message's record time; one that moves, or has
// nothing to deliver, does not; the role's own partitions (delivered) do
// not; a hold is never older than maxHold.
func TestStallWatch(t *testing.T) {
	kc := kafkatest.Broker(t, 2)
	topic := kc.Topic(kafkaio.TopicCamera)
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	w := kc.NewWriter()
	defer w.Close()
	var msgs []kafka.Message
	for i := range 3 {
		msgs = append(msgs, kafka.Message{Topic: topic, Partition: 0, Value: []byte("x"), Time: base.Add(time.Duration(i) * time.Second)})
	}
	msgs = append(msgs, kafka.Message{Topic: topic, Partition: 1, Value: []byte("y"), Time: base})
	w.Balancer = partitionOf{}
	if err := w.WriteMessages(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	client := kc.Client()
	commit := func(group string, offsets map[int]int64) {
		t.Helper()
		var parts []kafka.OffsetCommit
		for p, o := range offsets {
			parts = append(parts, kafka.OffsetCommit{Partition: p, Offset: o})
		}
		res, err := client.OffsetCommit(t.Context(), &kafka.OffsetCommitRequest{GroupID: group, GenerationID: -1,
			Topics: map[string][]kafka.OffsetCommit{topic: parts}})
		if err != nil {
			t.Fatal(err)
		}
		for _, ps := range res.Topics {
			for _, p := range ps {
				if p.Error != nil {
					t.Fatalf("commit of %s/%d: %v", group, p.Partition, p.Error)
				}
			}
		}
	}
	commit("up", map[int]int64{0: 1, 1: 1})
	commit("own", map[int]int64{0: 1, 1: 1})

	delivering := map[int]bool{}
	delivered := func(p int, since time.Time) bool { return delivering[p] }
	now := time.Now()
	sw := newStallWatch(client, time.Hour, stallSource{group: "up", topics: []string{topic}})
	poll := func(want stallReport) {
		t.Helper()
		now = now.Add(time.Second)
		rep, ok, err := sw.poll(t.Context(), now, delivered)
		if !ok || err != nil {
			t.Fatalf("poll: ok %v, err %v", ok, err)
		}
		if !rep.hold.Equal(want.hold) || rep.stalled != want.stalled || rep.upstreamLag != want.upstreamLag {
			t.Errorf("poll = %d stalled, hold %v, upstream lag %d; want %d, %v, %d",
				rep.stalled, rep.hold, rep.upstreamLag, want.stalled, want.hold, want.upstreamLag)
		}
	}
	poll(stallReport{upstreamLag: 2})                                          // first sight: nothing known to stand still
	poll(stallReport{upstreamLag: 2, stalled: 1, hold: base.Add(time.Second)}) // partition 0 stands at offset 1
	poll(stallReport{upstreamLag: 2, stalled: 1, hold: base.Add(time.Second)})
	commit("up", map[int]int64{0: 2})
	poll(stallReport{upstreamLag: 1}) // it moved
	poll(stallReport{upstreamLag: 1, stalled: 1, hold: base.Add(2 * time.Second)})
	commit("up", map[int]int64{0: 3})
	poll(stallReport{})
	poll(stallReport{}) // all committed: nothing to wait for

	// The role's own group: a partition it delivers is its own.
	sw = newStallWatch(client, time.Hour, stallSource{group: "own", topics: []string{topic}, own: true})
	delivering[0] = true
	poll(stallReport{})
	poll(stallReport{})
	delivering[0] = false
	poll(stallReport{stalled: 1, hold: base.Add(time.Second)})

	// A hold is never older than maxHold.
	sw = newStallWatch(client, time.Minute, stallSource{group: "own", topics: []string{topic}, own: true})
	poll(stallReport{})
	poll(stallReport{stalled: 1, hold: now.Add(time.Second - time.Minute)})
}

// partitionOf writes each message to the partition it names.
type partitionOf struct{}

func (partitionOf) Balance(m kafka.Message, _ ...int) int { return m.Partition }
