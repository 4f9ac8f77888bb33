package rules

import (
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/kafkaio"
	"citywatch/internal/kafkaio/kafkatest"
)

// TestStallWatch walks a group through a stall on a real broker: a
// partition with uncommitted messages whose committed offset stays put
// holds at its first message's record time, as does one first seen with
// an old message waiting; one drained after a stall holds until the role
// has read its input up to the end offsets at the drain; one that moves,
// or has nothing to deliver, or was first seen with a recent one, does
// not; the role's own partitions (delivered) do not; a hold is never
// older than maxHold.
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
	role := fakeStallRole{delivering: delivering, read: map[int]int64{}}
	now := time.Now()
	sw := newStallWatch(client, time.Hour, topic, stallSource{group: "up", topics: []string{topic}})
	poll := func(want stallReport) {
		t.Helper()
		now = now.Add(time.Second)
		rep, ok, err := sw.poll(t.Context(), now, role)
		if !ok || err != nil {
			t.Fatalf("poll: ok %v, err %v", ok, err)
		}
		if !rep.hold.Equal(want.hold) || rep.stalled != want.stalled || rep.upstreamLag != want.upstreamLag {
			t.Errorf("poll = %d stalled, hold %v, upstream lag %d; want %d, %v, %d",
				rep.stalled, rep.hold, rep.upstreamLag, want.stalled, want.hold, want.upstreamLag)
		}
	}
	// First sight: partition 0's first waiting message is 10 min old, so
	// it may be a backlog a restarted ingest drains; then it stands still.
	poll(stallReport{upstreamLag: 2, stalled: 1, hold: base.Add(time.Second)})
	poll(stallReport{upstreamLag: 2, stalled: 1, hold: base.Add(time.Second)})
	poll(stallReport{upstreamLag: 2, stalled: 1, hold: base.Add(time.Second)})
	commit("up", map[int]int64{0: 2})
	// It moves again but is still behind: it holds at its first waiting
	// message until that is about now or nothing waits.
	poll(stallReport{upstreamLag: 1, stalled: 1, hold: base.Add(2 * time.Second)})
	poll(stallReport{upstreamLag: 1, stalled: 1, hold: base.Add(2 * time.Second)})
	commit("up", map[int]int64{0: 3})
	// Drained: it holds until the role has read its input (here the
	// same topic) up to where that ended at the drain.
	poll(stallReport{stalled: 1, hold: base.Add(2 * time.Second)})
	role.read[0] = 2
	poll(stallReport{stalled: 1, hold: base.Add(2 * time.Second)})
	role.read[0], role.read[1] = 3, 1
	poll(stallReport{})
	poll(stallReport{}) // all committed and read: nothing to wait for
	role.read[0], role.read[1] = 100, 100
	// A partition that moves and was never stalled does not hold.
	if err := w.WriteMessages(t.Context(),
		kafka.Message{Topic: topic, Partition: 0, Value: []byte("x"), Time: base.Add(3 * time.Second)},
		kafka.Message{Topic: topic, Partition: 0, Value: []byte("x"), Time: base.Add(4 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	commit("up", map[int]int64{0: 4})
	poll(stallReport{upstreamLag: 1})
	commit("up", map[int]int64{0: 5})
	poll(stallReport{})
	// One that catches up to about now stops holding while it still lags.
	if err := w.WriteMessages(t.Context(),
		kafka.Message{Topic: topic, Partition: 0, Value: []byte("x"), Time: base.Add(5 * time.Second)},
		kafka.Message{Topic: topic, Partition: 0, Value: []byte("x"), Time: now.Add(time.Second)},
		kafka.Message{Topic: topic, Partition: 0, Value: []byte("x"), Time: now}); err != nil {
		t.Fatal(err)
	}
	poll(stallReport{upstreamLag: 3, stalled: 1, hold: base.Add(5 * time.Second)})
	commit("up", map[int]int64{0: 6})
	poll(stallReport{upstreamLag: 2})
	commit("up", map[int]int64{0: 8})
	// First sight of a partition whose first waiting message is about now:
	// nothing to wait for.
	if err := w.WriteMessages(t.Context(),
		kafka.Message{Topic: topic, Partition: 0, Value: []byte("x"), Time: now}); err != nil {
		t.Fatal(err)
	}
	sw = newStallWatch(client, time.Hour, topic, stallSource{group: "up", topics: []string{topic}})
	poll(stallReport{upstreamLag: 1})

	// The role's own group: a partition it delivers is its own.
	sw = newStallWatch(client, time.Hour, topic, stallSource{group: "own", topics: []string{topic}, own: true})
	delivering[0] = true
	poll(stallReport{})
	poll(stallReport{})
	delivering[0] = false
	poll(stallReport{stalled: 1, hold: base.Add(time.Second)})

	// A hold is never older than maxHold.
	sw = newStallWatch(client, time.Minute, topic, stallSource{group: "own", topics: []string{topic}, own: true})
	poll(stallReport{})
	poll(stallReport{stalled: 1, hold: now.Add(time.Second - time.Minute)})
}

// fakeStallRole is a role that delivers the partitions delivering holds
// and has read its input up to read.
type fakeStallRole struct {
	delivering map[int]bool
	read       map[int]int64
}

func (f fakeStallRole) delivered(p int, _ time.Time) bool { return f.delivering[p] }

func (f fakeStallRole) reached(ends map[int]int64) bool {
	for p, end := range ends {
		if f.read[p] < end {
			return false
		}
	}
	return true
}

// partitionOf writes each message to the partition it names.
type partitionOf struct{}

func (partitionOf) Balance(m kafka.Message, _ ...int) int { return m.Partition }

// TestRoleWaitsForStalledUpstream is the case stallWatch is for: a raw
// partition that ingest's group holds without moving (a dead member
// awaiting its session timeout) while other devices' events carry event
// time 20 s on. The stalled device's fight, delivered afterwards with the
// time it happened, raises its alert; without the upstream group to watch
// it is late and raises nothing.
func TestRoleWaitsForStalledUpstream(t *testing.T) {
	for _, tc := range []struct {
		upstream  string
		wantAlert bool
	}{
		{"", true},
		{"none", false},
	} {
		t.Run("upstream="+tc.upstream, func(t *testing.T) {
			h := newRoleHarness(t)
			t0 := time.Now().Truncate(time.Millisecond)
			w := h.kc.NewWriter()
			defer w.Close()
			w.Balancer = partitionOf{}
			// The raw message the fight will come from, never committed by
			// ingest's group in this test.
			if err := w.WriteMessages(t.Context(), kafka.Message{Topic: h.kc.Topic(kafkaio.TopicCamera), Value: []byte("{}"), Time: t0}); err != nil {
				t.Fatal(err)
			}

			reg := prometheus.NewRegistry()
			r, err := NewRole(RoleConfig{Upstream: tc.upstream}, Config{}, h.kc, testPseudonymizer(t), nil, reg, kafkaio.NewMetrics(reg), slog.New(slog.NewTextHandler(testWriter{t}, nil)))
			if err != nil {
				t.Fatal(err)
			}
			r.tickEvery = 100 * time.Millisecond
			stop, _ := h.start(r)
			defer stop()
			if tc.upstream == "" {
				waitUntil(t, "the stall seen", func() bool { return testutil.ToFloat64(r.metrics.stalled) >= 1 })
			}

			dec := event.Decoder{Now: func() time.Time { return t0.Add(time.Hour) }}
			normalised := func(at time.Duration, device, fields string) kafka.Message {
				raw := fmt.Sprintf(`{"id":"%s-%d","time":%q,"type":"%s","device_id":%q,"lat":32.02,"lon":112.12%s}`,
					device, at, t0.Add(at).Format(time.RFC3339Nano), map[bool]string{true: "camera.detection", false: "device.heartbeat"}[fields != ""], device, fields)
				var e event.Event
				if err := dec.Decode([]byte(raw), &e); err != nil {
					t.Fatalf("%s: %v", raw, err)
				}
				// The record time is when ingest took it: with the device's
				// time for the others, long after it for the fight.
				rec := t0.Add(at)
				if fields != "" {
					rec = time.Now()
				}
				return kafka.Message{Topic: h.kc.Topic(kafkaio.TopicEvents), Key: []byte(device), Value: event.AppendJSON(nil, &e), Time: rec}
			}
			var others []kafka.Message
			for s := time.Second; s <= 20*time.Second; s += time.Second {
				m := normalised(s, "cam-other", "")
				// One partition, not the fight's: spread over several, the
				// others' own partitions could come one after another and
				// some of them late, which is not the case under test.
				m.Partition = 1
				others = append(others, m)
			}
			if err := w.WriteMessages(t.Context(), others...); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the other devices' events read", func() bool {
				lag, err := kafkaio.TotalLag(t.Context(), h.kc.Client(), r.Group(), r.Topics())
				return err == nil && lag == 0
			})

			if tc.upstream == "none" {
				// The role's own group can look stalled for a poll while
				// the others are delivered (their record times lie ahead of
				// the clock here), holding the watermark: the fight is to
				// come once the others have carried it on.
				waitUntil(t, "the watermark carried on by the others", func() bool {
					return testutil.ToFloat64(r.metrics.watermark) >= float64(t0.Add(10*time.Second).UnixMilli())/1000
				})
			}
			fight := normalised(100*time.Millisecond, "cam-fight", `,"camera_class":"A","object":"person","behavior":"fight","confidence":0.9`)
			if err := w.WriteMessages(t.Context(), fight); err != nil {
				t.Fatal(err)
			}
			raised := func() bool {
				for _, a := range h.alerts() {
					if a.Rule == "camera.violence" {
						return true
					}
				}
				return false
			}
			if tc.wantAlert {
				waitUntil(t, "the fight's alert", raised)
				if late := testutil.ToFloat64(r.metrics.late); late != 0 {
					t.Errorf("%v events late", late)
				}
				return
			}
			waitUntil(t, "the fight counted late", func() bool { return testutil.ToFloat64(r.metrics.late) == 1 })
			if raised() {
				t.Error("the late fight raised an alert")
			}
		})
	}
}

// waitUntil polls f for up to 20 s.
func waitUntil(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 20 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRoleWaitsForDrainedUpstream is a restart amid a stall upstream:
// ingest drains its backlog while the restarted role still waits for its
// group, which a killed predecessor's member holds until its session
// times out. The drained partition's hold lasts until the role has read
// what ingest wrote from it: the fight it held back, delivered once the
// group gives the role its partitions, behind events that the replay
// carried 20 s further, raises its alert and is not late.
func TestRoleWaitsForDrainedUpstream(t *testing.T) {
	h := newRoleHarness(t)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	w := h.kc.NewWriter()
	defer w.Close()
	w.Balancer = partitionOf{}
	raw := h.kc.Topic(kafkaio.TopicCamera)
	if err := w.WriteMessages(t.Context(), kafka.Message{Topic: raw, Value: []byte("{}"), Time: t0}); err != nil {
		t.Fatal(err)
	}
	normalised := func(at time.Duration, device, fields string, partition int) kafka.Message {
		typ := "device.heartbeat"
		if fields != "" {
			typ = "camera.detection"
		}
		raw := fmt.Sprintf(`{"id":"%s-%d","time":%q,"type":%q,"device_id":%q,"lat":32.02,"lon":112.12%s}`,
			device, at, t0.Add(at).Format(time.RFC3339Nano), typ, device, fields)
		var e event.Event
		if err := (&event.Decoder{Now: time.Now}).Decode([]byte(raw), &e); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		return kafka.Message{Topic: h.kc.Topic(kafkaio.TopicEvents), Partition: partition, Key: []byte(device),
			Value: event.AppendJSON(nil, &e), Time: time.Now()}
	}
	var others []kafka.Message
	for s := time.Second; s <= 20*time.Second; s += time.Second {
		others = append(others, normalised(s, "cam-other", "", 1))
	}
	if err := w.WriteMessages(t.Context(), others...); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	r, err := NewRole(RoleConfig{}, Config{}, h.kc, testPseudonymizer(t), nil, reg, kafkaio.NewMetrics(reg), slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	r.tickEvery = 100 * time.Millisecond
	deadMember(t, h.kc, r.Group(), h.kc.Topic(kafkaio.TopicEvents), 6*time.Second)
	stop, _ := h.start(r)
	defer stop()
	waitUntil(t, "the stall seen", func() bool { return testutil.ToFloat64(r.metrics.stalled) >= 1 })

	// Ingest drains: it writes the fight and commits the raw message.
	fight := normalised(100*time.Millisecond, "cam-fight", `,"camera_class":"A","object":"person","behavior":"fight","confidence":0.9`, 0)
	if err := w.WriteMessages(t.Context(), fight); err != nil {
		t.Fatal(err)
	}
	res, err := h.kc.Client().OffsetCommit(t.Context(), &kafka.OffsetCommitRequest{GroupID: r.cfg.Upstream, GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{raw: {{Partition: 0, Offset: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Topics[raw][0].Error; err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the fight's alert", func() bool {
		for _, a := range h.alerts() {
			if a.Rule == "camera.violence" {
				return true
			}
		}
		return testutil.ToFloat64(r.metrics.late) > 0
	})
	if late := testutil.ToFloat64(r.metrics.late); late != 0 {
		t.Errorf("%v events late", late)
	}
}

// deadMember joins group as a consumer of every partition of topic and
// then neither heartbeats nor leaves, as a process killed with SIGKILL
// would: the group's next member waits for its session (timeout) to end.
func deadMember(t *testing.T, kc kafkaio.Config, group, topic string, timeout time.Duration) {
	t.Helper()
	client := kc.Client()
	parts, err := kafkaio.Partitions(t.Context(), kc, topic)
	if err != nil {
		t.Fatal(err)
	}
	req := &kafka.JoinGroupRequest{GroupID: group, SessionTimeout: timeout, RebalanceTimeout: timeout, ProtocolType: "consumer",
		Protocols: []kafka.GroupProtocol{{Name: "range", Metadata: kafka.GroupProtocolSubscription{Topics: []string{topic}}}}}
	res, err := client.JoinGroup(t.Context(), req)
	if err == nil && errors.Is(res.Error, kafka.MemberIDRequired) {
		req.MemberID = res.MemberID
		res, err = client.JoinGroup(t.Context(), req)
	}
	if err == nil {
		err = res.Error
	}
	if err != nil {
		t.Fatalf("cannot join %s: %v", group, err)
	}
	sync, err := client.SyncGroup(t.Context(), &kafka.SyncGroupRequest{GroupID: group, GenerationID: res.GenerationID,
		MemberID: res.MemberID, ProtocolType: "consumer", ProtocolName: res.ProtocolName,
		Assignments: []kafka.SyncGroupRequestAssignment{{MemberID: res.MemberID,
			Assignment: kafka.GroupProtocolAssignment{AssignedPartitions: map[string][]int{topic: parts}}}}})
	if err == nil {
		err = sync.Error
	}
	if err != nil {
		t.Fatalf("cannot sync %s: %v", group, err)
	}
}
