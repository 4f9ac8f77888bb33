package gateway

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"citywatch/event"
	"citywatch/ingest/rtp"
	"citywatch/internal/kafkaio"
)

func rtpConfig() rtp.Config {
	return rtp.Config{Addr: "127.0.0.1:0", Sockets: 2, CheckInterval: 50 * time.Millisecond}
}

// motorVehicles returns a MotorVehicleListObject of n passes at tollgate,
// with record ids mv-<from> to mv-<from+n-1>.
func motorVehicles(tollgate string, n, from int) string {
	var b strings.Builder
	b.WriteString(`{"MotorVehicleListObject":{"MotorVehicleObject":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"MotorVehicleID":"mv-%d","TollgateID":"%s","PlateNo":"鄂F12345","PlateColor":"5","PassTime":"20261126081530","LaneNo":"1"}`, from+i, tollgate)
	}
	b.WriteString(`]}}`)
	return b.String()
}

// recordsOnTopic returns the GA/T 1400 record ids of the motor vehicles on
// the checkpoint topic (events viid-mv-<id>).
func recordsOnTopic(ctx context.Context, t *testing.T, kc kafkaio.Config) map[string]bool {
	t.Helper()
	on := map[string]bool{}
	var d event.Decoder
	for _, m := range readTopic(ctx, t, kc, kc.Topic(kafkaio.TopicCheckpoint)) {
		var e event.Event
		if err := d.Decode(m.Value, &e); err != nil {
			t.Fatalf("%s: %v", m.Value, err)
		}
		on[strings.TrimPrefix(e.ID, "viid-mv-")] = true
	}
	return on
}
