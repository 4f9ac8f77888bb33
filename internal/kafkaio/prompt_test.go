package kafkaio

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/kafka-go"
)

// TestPromptWriterKeepsOrder writes single messages, small writes and
// large ones, all to the keys of a few partitions, and reads each
// partition back in the order written.
func TestPromptWriterKeepsOrder(t *testing.T) {
	c := testBroker(t)
	topic := c.Topic(TopicAlerts)
	w := c.NewPromptWriter(nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	want := map[string][]string{} // key → values, in order
	n := 0
	for _, size := range []int{1, 3, 4, 5, 40, 64, 65, 1, 2, 200, 16, 1} {
		msgs := make([]kafka.Message, size)
		for i := range msgs {
			key := fmt.Sprintf("k%d", n%5)
			val := fmt.Sprintf("v%04d", n)
			msgs[i] = kafka.Message{Topic: topic, Key: []byte(key), Value: []byte(val)}
			want[key] = append(want[key], val)
			n++
		}
		if err := w.WriteMessages(t.Context(), msgs...); err != nil {
			t.Fatalf("write of %d: %v", size, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	if _, err := ReadSince(t.Context(), c, topic, time.Time{}, func(*kafka.Message) (int64, bool) { return 0, true }, func(m *kafka.Message) {
		got[string(m.Key)] = append(got[string(m.Key)], string(m.Value))
	}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages by key (-written +read):\n%s", diff)
	}
}
