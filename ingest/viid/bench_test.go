package viid

import (
	"testing"

	"citywatch/event"
)

// BenchmarkMotorVehicle is one GA/T 1400 motor-vehicle record decoded
// and mapped to a checkpoint.pass.
func BenchmarkMotorVehicle(b *testing.B) {
	raw := []byte(`{"MotorVehicleID":"42060200001190000001022026112608153000001","TollgateID":"kk-001","DeviceID":"42060200001190000001","PlateNo":"鄂F12345","PlateColor":"5","PassTime":"20261126081530","LaneNo":"2","Speed":"63.5","VehicleClass":"K33","VehicleColor":"2","PlateReliability":"95"}`)
	m := mapper{devices: devices, loc: shanghai}
	var e event.Event
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := m.motorVehicle(raw, &e); err != nil {
			b.Fatal(err)
		}
	}
}
