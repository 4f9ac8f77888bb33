package viid

import (
	"testing"
	"unicode/utf8"

	"citywatch/event"
)

// FuzzDecode runs the GA/T 1400 decoder and mapping on any body: no
// panic, and every record either fails with a reason or maps to an event
// whose fields are in the contract's ranges.
func FuzzDecode(f *testing.F) {
	for _, name := range []string{"motorvehicles.json", "faces.json", "persons.json"} {
		f.Add(readFile(f, name))
	}
	f.Add([]byte(`{"motorvehiclelistobject":{"motorvehicleobject":{"MotorVehicleID":1,"TollgateID":"kk-001","LaneNo":"1","PassTime":20261126081530}}}`))
	m := mapper{devices: devices, loc: shanghai}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, kind := range []struct {
			outer, inner string
			fn           func([]byte, *event.Event) (string, error)
		}{
			{"MotorVehicleListObject", "MotorVehicleObject", m.motorVehicle},
			{"FaceListObject", "FaceObject", m.face},
			{"PersonListObject", "PersonObject", m.person},
		} {
			recs, err := list(body, kind.outer, kind.inner)
			if err != nil {
				continue
			}
			for _, raw := range recs {
				var e event.Event
				if _, err := kind.fn(raw, &e); err != nil {
					if err.Error() == "" {
						t.Fatal("error without reason")
					}
					continue
				}
				checkEvent(t, &e)
			}
		}
	})
}

func checkEvent(t *testing.T, e *event.Event) {
	t.Helper()
	if n := utf8.RuneCountInString(e.ID); n < 1 || n > 128 || e.DeviceID == "" || e.Time.IsZero() {
		t.Fatalf("bad common fields %+v", e)
	}
	switch e.Type {
	case event.TypeCheckpointPass:
		if e.Lane < 1 || e.SpeedKmh < 0 || e.Confidence < 0 || e.Confidence > 1 || e.VehicleType == "" {
			t.Fatalf("bad pass %+v", e)
		}
		switch e.PlateColor {
		case "", "blue", "yellow", "green", "white", "black":
		default:
			t.Fatalf("plate colour %q", e.PlateColor)
		}
	case event.TypeCameraDetection:
		if e.Object == "" || e.Count < 1 || e.CameraClass == "" {
			t.Fatalf("bad detection %+v", e)
		}
	default:
		t.Fatalf("type %v", e.Type)
	}
}
