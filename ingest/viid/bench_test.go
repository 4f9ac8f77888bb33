package viid

import (
	"testing"

	"citywatch/event"
)

// BenchmarkMotorVehicle is one GA/T 1400 motor-vehicle record decoded
// and mapped to a checkpoint.pass.
func BenchmarkMotorVehicle(b *testing.B) {
	benchMotorVehicle(b, []byte(`{"MotorVehicleID":"42060200001190000001022026112608153000001","TollgateID":"kk-001","DeviceID":"42060200001190000001","PlateNo":"鄂F12345","PlateColor":"5","PassTime":"20261126081530","LaneNo":"2","Speed":"63.5","VehicleClass":"K33","VehicleColor":"2","PlateReliability":"95"}`))
}

// BenchmarkMotorVehicleVendor is a record as a checkpoint platform sends
// it: most members are GA/T 1400 fields the receiver does not read, some
// it reads are absent (so the misspelling scan runs), and two image
// references go to attrs.
func BenchmarkMotorVehicleVendor(b *testing.B) { benchMotorVehicle(b, vendorRecord) }

// benchMotorVehicle decodes and maps raw, a motor-vehicle record, b.N
// times.
func benchMotorVehicle(b *testing.B, raw []byte) {
	m := mapper{devices: devices, loc: shanghai}
	var e event.Event
	var ri recordInfo
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		ri.misspelt = ri.misspelt[:0]
		if err := m.motorVehicle(raw, &e, &ri); err != nil {
			b.Fatal(err)
		}
	}
}

var vendorRecord = []byte(`{"MotorVehicleID":"42060200001190000001022026112608153500001","InfoKind":1,"SourceID":"42060200001190000001022026112608153500001",` +
	`"TollgateID":"kk-001","DeviceID":"42060200001190000001","StorageUrl1":"http://10.20.1.5:6120/pic?=d7ei703-*0a1i","LeftTopX":0,"LeftTopY":0,` +
	`"RightBtmX":0,"RightBtmY":0,"MarkTime":"","AppearTime":"","DisappearTime":"","LaneNo":"2","HasPlate":"1","PlateClass":"02","PlateColor":"05",` +
	`"PlateNo":"鄂F12345","PlateCharReliability":"88,90,91,95,87,92,93","PassTime":"20261126081535","Speed":"45.0","Direction":"1",` +
	`"VehicleClass":"K33","VehicleBrand":"12","VehicleColor":"J","VehicleColorDepth":"1","NameOfPassedRoad":"襄阳大道","IsSuspicious":false,` +
	`"SubImageList":{"SubImageInfoObject":[{"ImageID":"42060200001190000001022026112608153500001","EventSort":4,"DeviceID":"42060200001190000001",` +
	`"StoragePath":"http://10.20.1.5:6120/pic?=d7ei703-*0a1i","Type":"01","FileFormat":"Jpeg","ShotTime":"20261126081535","Width":2560,"Height":1440},` +
	`{"ImageID":"42060200001190000001022026112608153500002","EventSort":4,"DeviceID":"42060200001190000001",` +
	`"StoragePath":"http://10.20.1.5:6120/pic?=d7ei703-*0a1j","Type":"02","FileFormat":"Jpeg","ShotTime":"20261126081535","Width":180,"Height":40}]}}`)
