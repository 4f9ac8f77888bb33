package store_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"citywatch/store"
)

func TestAlertsStoredOncePerMessage(t *testing.T) {
	db := open(t)
	ctx := t.Context()
	firing := `{"id":"a1","rule":"camera.violence","severity":"critical","status":"firing","subject":{"kind":"device","id":"cam-1"},` +
		`"event_time":"2026-11-26T08:15:30.125+08:00","raised_at":"2026-11-26T00:15:30.200Z","lat":32.01,"lon":112.12,"district":"襄城区",` +
		`"circle_id":"c-07","tier_minutes":1,"evidence":["e1"],"summary":"打架斗殴","details":{"confidence":0.9}}`
	updated := `{"id":"a1","rule":"camera.violence","severity":"critical","status":"updated","subject":{"kind":"device","id":"cam-1"},` +
		`"event_time":"2026-11-26T08:16:30+08:00","raised_at":"2026-11-26T00:16:30.300Z","lat":32.01,"lon":112.12,"district":"",` +
		`"evidence":["e1","e2"],"summary":"打架斗殴","details":{}}`
	var rows store.AlertRows
	for _, m := range []string{firing, updated, firing} { // the second firing is a replayed copy
		if err := rows.AddAlert([]byte(m), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range []string{`{`, `{"id":"x"}`, `{"id":"x","rule":"r","status":"firing","event_time":"yesterday"}`} {
		if err := rows.AddAlert([]byte(bad), time.Now()); err == nil {
			t.Errorf("AddAlert(%s) = nil, want an error", bad)
		}
	}
	if rows.Len() != 3 {
		t.Fatalf("Len = %d, want 3", rows.Len())
	}
	if err := db.InsertAlerts(ctx, &rows); err != nil {
		t.Fatal(err)
	}
	if err := db.InsertAlerts(ctx, &rows); err != nil { // a retried insert
		t.Fatal(err)
	}
	got, err := db.CountAlertMessages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]uint64{"camera.violence firing": 1, "camera.violence updated": 1}, got); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
	raised, err := db.CountAlerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]uint64{"camera.violence": 1}, raised); diff != "" {
		t.Errorf("raised (-want +got):\n%s", diff)
	}
	stored := query(t, db, "SELECT evidence, tier_minutes, event_time_ms, details FROM "+db.Database()+".alerts FINAL WHERE status = 'firing'")
	if want := [][]string{{"[e1]", "1", "125", `{"confidence":0.9}`}}; !cmp.Equal(want, stored) {
		t.Errorf("stored firing row = %v, want %v", stored, want)
	}
	rows.Reset()
	if rows.Len() != 0 {
		t.Errorf("Len after Reset = %d", rows.Len())
	}
}
