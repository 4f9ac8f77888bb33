package simulators

import (
	"testing"
	"time"

	"citywatch/event"
)

func TestFuel(t *testing.T) {
	s := newSim(t, Config{Seed: 6, Scale: 0.5, Fuel: FuelConfig{PurchasesPerHour: 200, BulkShare: 0.2}}, false)
	evs := stepEvents(DefaultStart, DefaultStart.Add(26*time.Hour), 10*time.Second, s.Fuel.Step)
	lastBulk := map[string]time.Time{}
	var n, bulk, permits int
	for i := range evs {
		e := &evs[i]
		if e.Type != event.TypeFuelPurchase {
			continue
		}
		n++
		if n%100 == 0 {
			decodeOK(t, e)
		}
		if !event.ValidIDNumber(e.BuyerID) || e.BuyerName == "" || e.StationID == "" {
			t.Fatalf("bad buyer: %+v", e)
		}
		if e.Container != "bulk" {
			continue
		}
		bulk++
		if e.PermitNo != "" {
			permits++
		} else if e.VolumeL > 20 {
			t.Errorf("background bulk of %.1f L without a permit", e.VolumeL)
		}
		if e.VolumeL >= 100 {
			t.Errorf("background bulk of %.1f L", e.VolumeL)
		}
		if p, ok := lastBulk[e.BuyerID]; ok && e.Time.Sub(p) < 24*time.Hour {
			t.Errorf("buyer bought in bulk twice within %s", e.Time.Sub(p))
		}
		lastBulk[e.BuyerID] = e.Time
	}
	if bulk == 0 || float64(permits)/float64(bulk) < 0.75 {
		t.Errorf("%d purchases, %d bulk, %d with permits: want most bulk with permits", n, bulk, permits)
	}
}
