package simulators

import (
	"testing"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
)

func TestCameras(t *testing.T) {
	s := newSim(t, Config{Seed: 2, Scale: 0.05}, false)
	count := func(from time.Time, d time.Duration) (det, hb int, evs []event.Event) {
		all := stepEvents(from, from.Add(d), time.Second, s.Cameras.Step)
		for i := range all {
			// Step catches up from the previous call; keep this hour only.
			if all[i].Time.After(from) {
				evs = append(evs, all[i])
			}
		}
		for i := range evs {
			switch evs[i].Type {
			case event.TypeCameraDetection:
				det++
			case event.TypeDeviceHeartbeat:
				hb++
			}
		}
		return det, hb, evs
	}
	night, _, nightEvs := count(DefaultStart.Add(3*time.Hour), time.Hour)
	peak, hb, peakEvs := count(DefaultStart.Add(8*time.Hour), time.Hour)
	if float64(peak) < 5*float64(night) {
		t.Errorf("detections: %d at 03:00, %d at 08:00; want a quiet night", night, peak)
	}
	if want := len(s.all[city.KindCamera]) * 60; hb < want-len(s.all[city.KindCamera]) || hb > want {
		t.Errorf("%d heartbeats in an hour, want %d", hb, want)
	}
	plates := 0
	for _, evs := range [][]event.Event{nightEvs, peakEvs} {
		for i := range evs {
			e := &evs[i]
			if e.Type != event.TypeCameraDetection {
				continue
			}
			d := s.City.Device(e.DeviceID)
			hour := e.Time.In(city.Location).Hour()
			switch {
			case e.Count >= 50:
				t.Fatalf("background crowd of %d", e.Count)
			case e.Behavior == "fight" && e.Confidence >= 0.8:
				t.Fatalf("background fight with confidence %v", e.Confidence)
			case d.Zone != "" && e.Object == "person" && (hour >= 22 || hour < 6):
				t.Fatalf("person in zone %s at night", d.Zone)
			case e.TrackID == "" || e.CameraClass != d.Class:
				t.Fatalf("detection without track or with the wrong class: %+v", e)
			}
			if e.Plate != "" {
				plates++
				decodeOK(t, e)
			}
		}
	}
	if plates == 0 {
		t.Error("no plates read by cameras")
	}
}
