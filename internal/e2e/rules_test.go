package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"citywatch/event"
	"citywatch/internal/chtest"
	"citywatch/rules"
	"citywatch/simulators"
	"citywatch/store"
)

func (p *pipeline) newRules() *rules.Role {
	p.t.Helper()
	ps, err := event.NewPseudonymizer(p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	r, err := rules.NewRole(rules.RoleConfig{}, rules.Config{}, p.kc, ps, nil, nil, p.km, p.log)
	if err != nil {
		p.t.Fatal(err)
	}
	return r
}

// raw returns a raw device message of the contract with id, time and the
// device's position filled in.
func raw(topic, device, id string, at time.Time, fields string) simulators.Message {
	v := fmt.Sprintf(`{"id":%q,"device_id":%q,"time":%q,"lat":32.01,"lon":112.12,%s}`, id, device, at.Format(time.RFC3339Nano), fields)
	return simulators.Message{Topic: topic, Key: []byte(device), Value: []byte(v), ID: id, Want: simulators.WantEvent}
}

// waitAlertMessages polls the alerts table until it holds want (messages
// by "rule status"), then a little longer, and fails with what it holds.
func waitAlertMessages(ctx context.Context, t *testing.T, db *store.DB, want map[string]uint64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var got map[string]uint64
	var err error
	for {
		got, err = db.CountAlertMessages(ctx)
		if err == nil && cmp.Equal(got, want) {
			// Stay a while: a message counted twice would show now.
			time.Sleep(1500 * time.Millisecond)
			if got, err = db.CountAlertMessages(ctx); err == nil && cmp.Equal(got, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("alerts table after 60 s (-want +got, last error %v):\n%s", err, cmp.Diff(want, got))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestPlantedIncidentsRaisedOnce runs raw device messages through ingest,
// the rules role, the alerts topic and the sink into ClickHouse: a hotlist
// plate, a bulk fuel purchase without permit and a fight are each raised
// once. Then the rules role is restarted with those alerts open, and the
// same incidents go on: they are updated, never raised a second time.
func TestPlantedIncidentsRaisedOnce(t *testing.T) {
	chCfg := chtest.Config(t)
	ctx := t.Context()
	p := newPipeline(t, chCfg)
	db := p.openDB(ctx)

	now := time.Now().Add(-2 * time.Minute)
	fight := `"type":"camera.detection","camera_class":"A","object":"person","behavior":"fight","confidence":0.93`
	pass := `"type":"checkpoint.pass","lane":2,"plate":"鄂FA8B52","plate_color":"blue","vehicle_type":"suv","speed_kmh":64`
	fuel := `"type":"fuel.purchase","station_id":"st-9","buyer_id":"420602199001011233","buyer_name":"张三","fuel":"92","container":"bulk","volume_l":45`
	first := []simulators.Message{
		raw("camera", "cam-e2e-1", "f-1", now, fight),
		raw("camera", "cam-e2e-1", "f-1", now, fight), // a resend: one event
		raw("checkpoint", "kk-e2e-1", "k-1", now.Add(time.Second), pass),
		raw("fuel", "fuel-e2e-1", "p-1", now.Add(2*time.Second), fuel),
		raw("camera", "cam-e2e-2", "n-1", now.Add(3*time.Second), `"type":"camera.detection","camera_class":"B","object":"person","behavior":"fight","confidence":0.5`),
	}
	p.produce(ctx, first)
	stopIngest := p.start(ctx, "ingest", p.newIngest(p.reg).Run)
	defer stopIngest()
	stopSink := p.start(ctx, "sink", p.newSink(db, p.reg).Run)
	defer stopSink()
	stopRules := p.start(ctx, "rules", p.newRules().Run)

	waitAlertMessages(ctx, t, db, map[string]uint64{
		"camera.violence firing":     1,
		"vehicle.hotlist firing":     1,
		"fuel.bulk_no_permit firing": 1,
	})
	if err := stopRules(); err != nil {
		t.Fatalf("rules: %v", err)
	}

	// The same incidents go on after a restart: more evidence for each, a
	// minute on (the default pack's update interval: an update sooner
	// would wait for that minute to pass on the watermark).
	stopRules = p.start(ctx, "rules", p.newRules().Run)
	defer func() {
		if err := stopRules(); err != nil {
			t.Errorf("rules: %v", err)
		}
	}()
	p.produce(ctx, []simulators.Message{
		raw("camera", "cam-e2e-1", "f-2", now.Add(70*time.Second), fight),
		raw("checkpoint", "kk-e2e-1", "k-2", now.Add(71*time.Second), pass),
		raw("fuel", "fuel-e2e-1", "p-2", now.Add(72*time.Second), fuel),
	})
	waitAlertMessages(ctx, t, db, map[string]uint64{
		"camera.violence firing":      1,
		"camera.violence updated":     1,
		"vehicle.hotlist firing":      1,
		"vehicle.hotlist updated":     1,
		"fuel.bulk_no_permit firing":  1,
		"fuel.bulk_no_permit updated": 1,
	})
	raised, err := db.CountAlerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]uint64{"camera.violence": 1, "vehicle.hotlist": 1, "fuel.bulk_no_permit": 1}, raised); diff != "" {
		t.Errorf("alerts raised by rule (-want +got):\n%s", diff)
	}
}
