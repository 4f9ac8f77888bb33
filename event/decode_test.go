package event

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var cst = time.FixedZone("CST", 8*3600)

func TestDecodeValid(t *testing.T) {
	tests := []struct {
		typ  string
		want Event
	}{
		{"camera.detection", Event{
			ID: "cam-0001-000001", Type: TypeCameraDetection, DeviceID: "cam-0001",
			Time: time.Date(2026, 11, 26, 8, 15, 30, 125e6, cst), Lat: 32.009, Lon: 112.122,
			CameraClass: "A", Object: "vehicle", Behavior: "wrong_way", Count: 1,
			Plate: "鄂F12345", PlateValid: true, PlateColor: "blue", Confidence: 0.93, TrackID: "t-77",
			Attrs: []byte(`{"vendor":{"model":"DS-2CD", "fw":[5,7,3]}}`),
		}},
		{"drone.detection", Event{
			ID: "drn-7-000042", Type: TypeDroneDetection, DeviceID: "drn-7",
			Time: time.Date(2026, 11, 26, 0, 15, 29, 0, time.UTC), Lat: 32.05, Lon: 112.14,
			Object: "person", Behavior: "crowd", Count: 64, Confidence: 0.81, AltM: 120.5,
		}},
		{"camera.health", Event{
			ID: "cam-0002-h-1", Type: TypeCameraHealth, DeviceID: "cam-0002",
			Time: time.Date(2026, 11, 26, 8, 15, 0, 0, cst), Lat: 32.01, Lon: 112.13,
			Status: "tamper", Detail: "镜头被遮挡",
		}},
		{"checkpoint.pass", Event{
			ID: "kk-03-1-000123", Type: TypeCheckpointPass, DeviceID: "kk-03",
			Time: time.Date(2026, 11, 26, 8, 15, 30, 500e6, cst), Lat: 32.1, Lon: 112.2,
			Lane: 2, Plate: "鄂F12345", PlateValid: true, PlateColor: "blue", VehicleType: "suv",
			VehicleColor: "白", SpeedKmh: 62.5, HeadingDeg: 270, HasHeading: true, Confidence: 0.97,
		}},
		{"fuel.purchase", Event{
			ID: "fs-018-20261126-0007", Type: TypeFuelPurchase, DeviceID: "fs-018-t1",
			Time: time.Date(2026, 11, 26, 8, 10, 2, 0, cst), Lat: 32.02, Lon: 112.15,
			StationID: "fs-018", BuyerID: "11010519491231002X", BuyerName: "张三丰",
			Plate: "鄂FD12345", PlateValid: true, Fuel: "92", Container: "bulk", VolumeL: 25.5, PermitNo: "XY-2026-0815",
		}},
		{"drone.telemetry", Event{
			ID: "drn-7-tm-1", Type: TypeDroneTelemetry, DeviceID: "drn-7",
			Time: time.Date(2026, 11, 26, 8, 15, 29, 999e6, cst), Lat: 32.05, Lon: 112.14,
			MissionID: "m-20261126-03", AltM: 118.2, HeadingDeg: 90, HasHeading: true, SpeedMs: 12.4, BatteryPct: 76,
		}},
		{"patrol.position", Event{
			ID: "pu-12-pos-88", Type: TypePatrolPosition, DeviceID: "pu-12",
			Time: time.Date(2026, 11, 26, 8, 15, 30, 0, cst), Lat: 32.04, Lon: 112.16,
			SpeedKmh: 0, HeadingDeg: 0, HasHeading: true, Status: "available",
		}},
		{"patrol.status", Event{
			ID: "pu-12-st-4", Type: TypePatrolStatus, DeviceID: "pu-12",
			Time: time.Date(2026, 11, 26, 8, 16, 0, 0, cst), Lat: 32.04, Lon: 112.16,
			DispatchID: "d-9f2c", Status: "en_route",
		}},
		{"device.heartbeat", Event{
			ID: "kk-03-hb-1440", Type: TypeDeviceHeartbeat, DeviceID: "kk-03",
			Time: time.Date(2026, 11, 26, 8, 15, 0, 0, cst), Lat: 32.1, Lon: 112.2,
		}},
	}
	if len(tests) != len(Types()) {
		t.Fatalf("%d cases for %d types", len(tests), len(Types()))
	}
	d := newTestDecoder()
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			var got Event
			if err := d.Decode(readValid(t, tt.typ), &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(&tt.want, &got, eventOpts); diff != "" {
				t.Errorf("Decode (-want +got):\n%s", diff)
			}
			_, wantOff := tt.want.Time.Zone()
			if _, off := got.Time.Zone(); off != wantOff {
				t.Errorf("offset %d, want %d", off, wantOff)
			}
			roundTrip(t, &got)
		})
	}
}

// requiredFields lists, per type, the fields whose absence (or null) is
// missing_field.
var requiredFields = map[string][]string{
	"camera.detection": {"camera_class", "object"},
	"drone.detection":  {"object"},
	"camera.health":    {"status"},
	"checkpoint.pass":  {"lane", "plate", "plate_color", "vehicle_type", "speed_kmh"},
	"fuel.purchase":    {"station_id", "buyer_id", "buyer_name", "fuel", "container", "volume_l"},
	"drone.telemetry":  {"mission_id", "alt_m", "heading_deg", "speed_ms", "battery_pct"},
	"patrol.position":  {"speed_kmh", "heading_deg", "status"},
	"patrol.status":    {"dispatch_id", "status"},
	"device.heartbeat": {},
}

// optionalFields lists, per type, the fields that may be left out.
var optionalFields = map[string][]string{
	"camera.detection": {"behavior", "count", "plate", "plate_color", "confidence", "track_id"},
	"drone.detection":  {"behavior", "count", "plate", "plate_color", "confidence", "track_id", "alt_m"},
	"camera.health":    {"detail"},
	"checkpoint.pass":  {"vehicle_color", "heading_deg", "confidence"},
	"fuel.purchase":    {"plate", "permit_no"},
}

func TestDecodeRequiredFields(t *testing.T) {
	d := newTestDecoder()
	common := []string{"id", "type", "device_id", "time", "lat", "lon"}
	for _, typ := range typeNamesList() {
		fields, ok := requiredFields[typ]
		if !ok {
			t.Fatalf("no required fields listed for %s", typ)
		}
		for _, f := range append(common[:len(common):len(common)], fields...) {
			for _, v := range []string{"-", "null"} {
				t.Run(typ+"/"+f+"="+v, func(t *testing.T) {
					var e Event
					err := d.Decode(msg(t, typ, f, v), &e)
					checkErr(t, err, CodeMissing, f)
					if got, want := err.Error(), fmt.Sprintf("missing field %q", f); got != want {
						t.Errorf("Error() = %q, want %q", got, want)
					}
				})
			}
		}
		for _, f := range optionalFields[typ] {
			for _, v := range []string{"-", "null"} {
				t.Run(typ+"/optional "+f+"="+v, func(t *testing.T) {
					var e Event
					if err := d.Decode(msg(t, typ, f, v), &e); err != nil {
						t.Fatal(err)
					}
					roundTrip(t, &e)
				})
			}
		}
	}
}

func checkErr(t *testing.T, err error, code Code, field string) {
	t.Helper()
	if code == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want %s", code)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	if e.Code != code || e.Field != field {
		t.Fatalf("error %q: code %q field %q, want %q %q", err, e.Code, e.Field, code, field)
	}
}

func TestDecodeRules(t *testing.T) {
	const ok Code = ""
	tests := []struct {
		name  string
		typ   string
		kv    []string
		code  Code
		field string
	}{
		// Common fields.
		{"id empty", "device.heartbeat", []string{"id", `""`}, CodeOutOfRange, "id"},
		{"id 128", "device.heartbeat", []string{"id", q(repeat("a", 128))}, ok, ""},
		{"id 128 runes", "device.heartbeat", []string{"id", q(repeat("鄂", 128))}, ok, ""},
		{"id 129", "device.heartbeat", []string{"id", q(repeat("a", 129))}, CodeOutOfRange, "id"},
		{"id 129 runes", "device.heartbeat", []string{"id", q(repeat("鄂", 129))}, CodeOutOfRange, "id"},
		{"id number", "device.heartbeat", []string{"id", `17`}, CodeWrongType, "id"},
		{"id object", "device.heartbeat", []string{"id", `{}`}, CodeWrongType, "id"},
		{"device_id empty", "device.heartbeat", []string{"device_id", `""`}, CodeOutOfRange, "device_id"},
		{"device_id 64", "device.heartbeat", []string{"device_id", q(repeat("设", 64))}, ok, ""},
		{"device_id 65", "device.heartbeat", []string{"device_id", q(repeat("d", 65))}, CodeOutOfRange, "device_id"},
		{"device_id bool", "device.heartbeat", []string{"device_id", `true`}, CodeWrongType, "device_id"},
		{"type unknown", "device.heartbeat", []string{"type", `"device.reboot"`}, CodeUnknownType, "type"},
		{"type empty", "device.heartbeat", []string{"type", `""`}, CodeUnknownType, "type"},
		{"type case", "device.heartbeat", []string{"type", `"Device.Heartbeat"`}, CodeUnknownType, "type"},
		{"type number", "device.heartbeat", []string{"type", `9`}, CodeWrongType, "type"},
		{"lat 90", "device.heartbeat", []string{"lat", `90`}, ok, ""},
		{"lat -90", "device.heartbeat", []string{"lat", `-90`}, ok, ""},
		{"lat 90.0000001", "device.heartbeat", []string{"lat", `90.0000001`}, CodeOutOfRange, "lat"},
		{"lat -90.5", "device.heartbeat", []string{"lat", `-90.5`}, CodeOutOfRange, "lat"},
		{"lat exponent", "device.heartbeat", []string{"lat", `3.2E1`}, ok, ""},
		{"lat huge", "device.heartbeat", []string{"lat", `1e400`}, CodeOutOfRange, "lat"},
		{"lat tiny", "device.heartbeat", []string{"lat", `1e-400`}, ok, ""},
		{"lat string", "device.heartbeat", []string{"lat", `"32.1"`}, CodeWrongType, "lat"},
		{"lon 180", "device.heartbeat", []string{"lon", `180`}, ok, ""},
		{"lon -180", "device.heartbeat", []string{"lon", `-180`}, ok, ""},
		{"lon 180.5", "device.heartbeat", []string{"lon", `180.5`}, CodeOutOfRange, "lon"},
		{"lon -181", "device.heartbeat", []string{"lon", `-181`}, CodeOutOfRange, "lon"},
		{"lon array", "device.heartbeat", []string{"lon", `[112]`}, CodeWrongType, "lon"},

		// time.
		{"time Z", "device.heartbeat", []string{"time", `"2026-11-26T00:15:00Z"`}, ok, ""},
		{"time lower case", "device.heartbeat", []string{"time", `"2026-11-26t00:15:00z"`}, ok, ""},
		{"time negative offset", "device.heartbeat", []string{"time", `"2026-11-25T14:15:00-10:00"`}, ok, ""},
		{"time odd offset", "device.heartbeat", []string{"time", `"2026-11-26T06:02:00+05:47"`}, ok, ""},
		{"time 1 digit", "device.heartbeat", []string{"time", `"2026-11-26T08:15:00.1+08:00"`}, ok, ""},
		{"time 9 digits", "device.heartbeat", []string{"time", `"2026-11-26T08:15:00.123456789+08:00"`}, ok, ""},
		{"time 10 digits", "device.heartbeat", []string{"time", `"2026-11-26T08:15:00.1234567891+08:00"`}, CodeBadFormat, "time"},
		{"time no digits", "device.heartbeat", []string{"time", `"2026-11-26T08:15:00.+08:00"`}, CodeBadFormat, "time"},
		{"time no offset", "device.heartbeat", []string{"time", `"2026-11-26T08:15:00"`}, CodeBadFormat, "time"},
		{"time no offset frac", "device.heartbeat", []string{"time", `"2026-11-26T08:15:00.125"`}, CodeBadFormat, "time"},
		{"time short offset", "device.heartbeat", []string{"time", `"2026-11-26T08:15:00+08"`}, CodeBadFormat, "time"},
		{"time offset no colon", "device.heartbeat", []string{"time", `"2026-11-26T08:15:00+0800"`}, CodeBadFormat, "time"},
		{"time offset 24h", "device.heartbeat", []string{"time", `"2026-11-26T08:15:00+24:00"`}, CodeBadFormat, "time"},
		{"time space", "device.heartbeat", []string{"time", `"2026-11-26 08:15:00+08:00"`}, CodeBadFormat, "time"},
		{"time date only", "device.heartbeat", []string{"time", `"2026-11-26"`}, CodeBadFormat, "time"},
		{"time Feb 30", "device.heartbeat", []string{"time", `"2026-02-30T08:15:00+08:00"`}, CodeBadFormat, "time"},
		{"time Feb 29 leap", "device.heartbeat", []string{"time", `"2024-02-29T08:15:00+08:00"`}, ok, ""},
		{"time Feb 29 not leap", "device.heartbeat", []string{"time", `"2025-02-29T08:15:00+08:00"`}, CodeBadFormat, "time"},
		{"time hour 24", "device.heartbeat", []string{"time", `"2026-11-26T24:00:00+08:00"`}, CodeBadFormat, "time"},
		{"time leap second", "device.heartbeat", []string{"time", `"2016-12-31T23:59:60Z"`}, CodeBadFormat, "time"},
		{"time trailing", "device.heartbeat", []string{"time", `"2026-11-26T08:15:00+08:00 "`}, CodeBadFormat, "time"},
		{"time unix", "device.heartbeat", []string{"time", `1795738500`}, CodeWrongType, "time"},
		{"time empty", "device.heartbeat", []string{"time", `""`}, CodeBadFormat, "time"},
		{"time 1999", "device.heartbeat", []string{"time", `"1999-12-31T23:59:59.999Z"`}, CodeOutOfRange, "time"},
		{"time 2000", "device.heartbeat", []string{"time", `"2000-01-01T00:00:00Z"`}, ok, ""},
		{"time 2000 by offset", "device.heartbeat", []string{"time", `"2000-01-01T07:59:59+08:00"`}, CodeOutOfRange, "time"},
		{"time 1970", "device.heartbeat", []string{"time", `"1970-01-01T00:00:00Z"`}, CodeOutOfRange, "time"},
		{"time exactly 5 min ahead", "device.heartbeat", []string{"time", `"2026-11-26T08:25:00+08:00"`}, ok, ""},
		{"time exactly 5 min ahead UTC", "device.heartbeat", []string{"time", `"2026-11-26T00:25:00Z"`}, ok, ""},
		{"time 5 min 1 ns ahead", "device.heartbeat", []string{"time", `"2026-11-26T08:25:00.000000001+08:00"`}, CodeFuture, "time"},
		{"time 5 min 1 ms ahead", "device.heartbeat", []string{"time", `"2026-11-26T00:25:00.001Z"`}, CodeFuture, "time"},
		{"time a year ahead", "device.heartbeat", []string{"time", `"2027-11-26T08:15:00+08:00"`}, CodeFuture, "time"},
		{"time far past", "device.heartbeat", []string{"time", `"2016-11-26T08:15:00+08:00"`}, ok, ""},

		// camera.detection.
		{"camera_class B", "camera.detection", []string{"camera_class", `"B"`}, ok, ""},
		{"camera_class C", "camera.detection", []string{"camera_class", `"C"`}, CodeOutOfRange, "camera_class"},
		{"camera_class lower", "camera.detection", []string{"camera_class", `"a"`}, CodeOutOfRange, "camera_class"},
		{"camera_class number", "camera.detection", []string{"camera_class", `1`}, CodeWrongType, "camera_class"},
		{"object person", "camera.detection", []string{"object", `"person"`}, ok, ""},
		{"object non_motor", "camera.detection", []string{"object", `"non_motor"`}, ok, ""},
		{"object face", "camera.detection", []string{"object", `"face"`}, ok, ""},
		{"object car", "camera.detection", []string{"object", `"car"`}, CodeOutOfRange, "object"},
		{"object empty", "camera.detection", []string{"object", `""`}, CodeOutOfRange, "object"},
		{"behavior empty", "camera.detection", []string{"behavior", `""`}, ok, ""},
		{"behavior dance", "camera.detection", []string{"behavior", `"dance"`}, CodeOutOfRange, "behavior"},
		{"behavior number", "camera.detection", []string{"behavior", `3`}, CodeWrongType, "behavior"},
		{"count 1", "camera.detection", []string{"count", `1`}, ok, ""},
		{"count 0", "camera.detection", []string{"count", `0`}, CodeOutOfRange, "count"},
		{"count -3", "camera.detection", []string{"count", `-3`}, CodeOutOfRange, "count"},
		{"count 1.5", "camera.detection", []string{"count", `1.5`}, CodeWrongType, "count"},
		{"count 2.0", "camera.detection", []string{"count", `2.0`}, ok, ""},
		{"count 5e1", "camera.detection", []string{"count", `5e1`}, ok, ""},
		{"count max", "camera.detection", []string{"count", `2147483647`}, ok, ""},
		{"count too big", "camera.detection", []string{"count", `2147483648`}, CodeOutOfRange, "count"},
		{"count string", "camera.detection", []string{"count", `"3"`}, CodeWrongType, "count"},
		{"confidence 0", "camera.detection", []string{"confidence", `0`}, ok, ""},
		{"confidence 1", "camera.detection", []string{"confidence", `1`}, ok, ""},
		{"confidence 1.01", "camera.detection", []string{"confidence", `1.01`}, CodeOutOfRange, "confidence"},
		{"confidence -0.01", "camera.detection", []string{"confidence", `-0.01`}, CodeOutOfRange, "confidence"},
		{"confidence percent", "camera.detection", []string{"confidence", `93`}, CodeOutOfRange, "confidence"},
		{"confidence string", "camera.detection", []string{"confidence", `"0.9"`}, CodeWrongType, "confidence"},
		{"track_id 128", "camera.detection", []string{"track_id", q(repeat("t", 128))}, ok, ""},
		{"track_id 129", "camera.detection", []string{"track_id", q(repeat("t", 129))}, CodeOutOfRange, "track_id"},
		{"track_id number", "camera.detection", []string{"track_id", `77`}, CodeWrongType, "track_id"},
		{"plate number", "camera.detection", []string{"plate", `12345`}, CodeWrongType, "plate"},
		{"plate 32", "camera.detection", []string{"plate", q(repeat("鄂", 32))}, ok, ""},
		{"plate 33", "camera.detection", []string{"plate", q(repeat("鄂", 33))}, CodeOutOfRange, "plate"},
		{"plate_color red", "camera.detection", []string{"plate_color", `"red"`}, CodeOutOfRange, "plate_color"},
		{"plate_color empty", "camera.detection", []string{"plate_color", `""`}, ok, ""},

		// drone.detection.
		{"drone alt_m negative", "drone.detection", []string{"alt_m", `-12.5`}, ok, ""},
		{"drone alt_m string", "drone.detection", []string{"alt_m", `"120"`}, CodeWrongType, "alt_m"},
		{"drone alt_m huge", "drone.detection", []string{"alt_m", `-1e999`}, CodeOutOfRange, "alt_m"},
		{"drone camera_class is unknown", "drone.detection", []string{"camera_class", `"Z"`}, ok, ""},
		{"drone object", "drone.detection", []string{"object", `"boat"`}, CodeOutOfRange, "object"},
		{"drone count", "drone.detection", []string{"count", `0.5`}, CodeWrongType, "count"},
		{"drone confidence", "drone.detection", []string{"confidence", `2`}, CodeOutOfRange, "confidence"},

		// camera.health.
		{"health ok", "camera.health", []string{"status", `"ok"`}, ok, ""},
		{"health video_loss", "camera.health", []string{"status", `"video_loss"`}, ok, ""},
		{"health blur", "camera.health", []string{"status", `"blur"`}, ok, ""},
		{"health offline", "camera.health", []string{"status", `"offline"`}, ok, ""},
		{"health broken", "camera.health", []string{"status", `"broken"`}, CodeOutOfRange, "status"},
		{"health patrol status", "camera.health", []string{"status", `"busy"`}, CodeOutOfRange, "status"},
		{"health detail number", "camera.health", []string{"detail", `404`}, CodeWrongType, "detail"},

		// checkpoint.pass.
		{"lane 1", "checkpoint.pass", []string{"lane", `1`}, ok, ""},
		{"lane 0", "checkpoint.pass", []string{"lane", `0`}, CodeOutOfRange, "lane"},
		{"lane 1.5", "checkpoint.pass", []string{"lane", `1.5`}, CodeWrongType, "lane"},
		{"lane string", "checkpoint.pass", []string{"lane", `"2"`}, CodeWrongType, "lane"},
		{"plate empty", "checkpoint.pass", []string{"plate", `""`}, ok, ""},
		{"plate_color empty", "checkpoint.pass", []string{"plate_color", `""`}, ok, ""},
		{"plate_color yellow", "checkpoint.pass", []string{"plate_color", `"yellow"`}, ok, ""},
		{"plate_color green", "checkpoint.pass", []string{"plate_color", `"green"`}, ok, ""},
		{"plate_color white", "checkpoint.pass", []string{"plate_color", `"white"`}, ok, ""},
		{"plate_color black", "checkpoint.pass", []string{"plate_color", `"black"`}, ok, ""},
		{"plate_color Blue", "checkpoint.pass", []string{"plate_color", `"Blue"`}, CodeOutOfRange, "plate_color"},
		{"plate_color 蓝", "checkpoint.pass", []string{"plate_color", `"蓝"`}, CodeOutOfRange, "plate_color"},
		{"vehicle_type car", "checkpoint.pass", []string{"vehicle_type", `"car"`}, ok, ""},
		{"vehicle_type van", "checkpoint.pass", []string{"vehicle_type", `"van"`}, ok, ""},
		{"vehicle_type truck", "checkpoint.pass", []string{"vehicle_type", `"truck"`}, ok, ""},
		{"vehicle_type bus", "checkpoint.pass", []string{"vehicle_type", `"bus"`}, ok, ""},
		{"vehicle_type motorcycle", "checkpoint.pass", []string{"vehicle_type", `"motorcycle"`}, ok, ""},
		{"vehicle_type other", "checkpoint.pass", []string{"vehicle_type", `"other"`}, ok, ""},
		{"vehicle_type tank", "checkpoint.pass", []string{"vehicle_type", `"tank"`}, CodeOutOfRange, "vehicle_type"},
		{"vehicle_type empty", "checkpoint.pass", []string{"vehicle_type", `""`}, CodeOutOfRange, "vehicle_type"},
		{"vehicle_color free", "checkpoint.pass", []string{"vehicle_color", `"珍珠白 metallic"`}, ok, ""},
		{"speed_kmh 0", "checkpoint.pass", []string{"speed_kmh", `0`}, ok, ""},
		{"speed_kmh -0.1", "checkpoint.pass", []string{"speed_kmh", `-0.1`}, CodeOutOfRange, "speed_kmh"},
		{"speed_kmh string", "checkpoint.pass", []string{"speed_kmh", `"62"`}, CodeWrongType, "speed_kmh"},
		{"heading 0", "checkpoint.pass", []string{"heading_deg", `0`}, ok, ""},
		{"heading 360", "checkpoint.pass", []string{"heading_deg", `360`}, ok, ""},
		{"heading 360.1", "checkpoint.pass", []string{"heading_deg", `360.1`}, CodeOutOfRange, "heading_deg"},
		{"heading -1", "checkpoint.pass", []string{"heading_deg", `-1`}, CodeOutOfRange, "heading_deg"},
		{"checkpoint confidence", "checkpoint.pass", []string{"confidence", `1.5`}, CodeOutOfRange, "confidence"},

		// fuel.purchase.
		{"station_id empty", "fuel.purchase", []string{"station_id", `""`}, CodeOutOfRange, "station_id"},
		{"station_id number", "fuel.purchase", []string{"station_id", `18`}, CodeWrongType, "station_id"},
		{"buyer_id upper X", "fuel.purchase", []string{"buyer_id", `"11010519491231002X"`}, ok, ""},
		{"buyer_id digit check", "fuel.purchase", []string{"buyer_id", q(validID("42060219900101123"))}, ok, ""},
		{"buyer_id wrong check", "fuel.purchase", []string{"buyer_id", `"110105194912310021"`}, CodeCheckDigit, "buyer_id"},
		{"buyer_id wrong digit", "fuel.purchase", []string{"buyer_id", `"11010519491231003X"`}, CodeCheckDigit, "buyer_id"},
		{"buyer_id 17", "fuel.purchase", []string{"buyer_id", `"11010519491231002"`}, CodeBadFormat, "buyer_id"},
		{"buyer_id 19", "fuel.purchase", []string{"buyer_id", `"11010519491231002X1"`}, CodeBadFormat, "buyer_id"},
		{"buyer_id letter", "fuel.purchase", []string{"buyer_id", `"1101051949123100AX"`}, CodeBadFormat, "buyer_id"},
		{"buyer_id Y", "fuel.purchase", []string{"buyer_id", `"11010519491231002Y"`}, CodeBadFormat, "buyer_id"},
		{"buyer_id full-width", "fuel.purchase", []string{"buyer_id", `"１１０１０５１９４９１２３１００２X"`}, CodeBadFormat, "buyer_id"},
		{"buyer_id empty", "fuel.purchase", []string{"buyer_id", `""`}, CodeBadFormat, "buyer_id"},
		{"buyer_id number", "fuel.purchase", []string{"buyer_id", `110105194912310021`}, CodeWrongType, "buyer_id"},
		{"buyer_name empty", "fuel.purchase", []string{"buyer_name", `""`}, CodeOutOfRange, "buyer_name"},
		{"buyer_name 64", "fuel.purchase", []string{"buyer_name", q(repeat("娜", 64))}, ok, ""},
		{"buyer_name 65", "fuel.purchase", []string{"buyer_name", q(repeat("娜", 65))}, CodeOutOfRange, "buyer_name"},
		{"buyer_name number", "fuel.purchase", []string{"buyer_name", `7`}, CodeWrongType, "buyer_name"},
		{"fuel 95", "fuel.purchase", []string{"fuel", `"95"`}, ok, ""},
		{"fuel 98", "fuel.purchase", []string{"fuel", `"98"`}, ok, ""},
		{"fuel diesel", "fuel.purchase", []string{"fuel", `"diesel"`}, ok, ""},
		{"fuel 93", "fuel.purchase", []string{"fuel", `"93"`}, CodeOutOfRange, "fuel"},
		{"fuel number", "fuel.purchase", []string{"fuel", `92`}, CodeWrongType, "fuel"},
		{"container vehicle", "fuel.purchase", []string{"container", `"vehicle"`}, ok, ""},
		{"container drum", "fuel.purchase", []string{"container", `"drum"`}, CodeOutOfRange, "container"},
		{"volume_l 0.001", "fuel.purchase", []string{"volume_l", `0.001`}, ok, ""},
		{"volume_l 0", "fuel.purchase", []string{"volume_l", `0`}, CodeOutOfRange, "volume_l"},
		{"volume_l -0", "fuel.purchase", []string{"volume_l", `-0`}, CodeOutOfRange, "volume_l"},
		{"volume_l -5", "fuel.purchase", []string{"volume_l", `-5`}, CodeOutOfRange, "volume_l"},
		{"volume_l string", "fuel.purchase", []string{"volume_l", `"25"`}, CodeWrongType, "volume_l"},
		{"permit_no number", "fuel.purchase", []string{"permit_no", `815`}, CodeWrongType, "permit_no"},
		{"fuel plate_color is unknown", "fuel.purchase", []string{"plate_color", `"orange"`}, ok, ""},

		// drone.telemetry.
		{"battery 0", "drone.telemetry", []string{"battery_pct", `0`}, ok, ""},
		{"battery 100", "drone.telemetry", []string{"battery_pct", `100`}, ok, ""},
		{"battery 100.5", "drone.telemetry", []string{"battery_pct", `100.5`}, CodeOutOfRange, "battery_pct"},
		{"battery -1", "drone.telemetry", []string{"battery_pct", `-1`}, CodeOutOfRange, "battery_pct"},
		{"speed_ms -0.1", "drone.telemetry", []string{"speed_ms", `-0.1`}, CodeOutOfRange, "speed_ms"},
		{"speed_ms 0", "drone.telemetry", []string{"speed_ms", `0`}, ok, ""},
		{"telemetry heading 361", "drone.telemetry", []string{"heading_deg", `361`}, CodeOutOfRange, "heading_deg"},
		{"telemetry alt_m below sea", "drone.telemetry", []string{"alt_m", `-30`}, ok, ""},
		{"telemetry alt_m bool", "drone.telemetry", []string{"alt_m", `false`}, CodeWrongType, "alt_m"},
		{"mission_id empty", "drone.telemetry", []string{"mission_id", `""`}, CodeOutOfRange, "mission_id"},

		// patrol.position.
		{"position busy", "patrol.position", []string{"status", `"busy"`}, ok, ""},
		{"position off_duty", "patrol.position", []string{"status", `"off_duty"`}, ok, ""},
		{"position en_route", "patrol.position", []string{"status", `"en_route"`}, CodeOutOfRange, "status"},
		{"position speed", "patrol.position", []string{"speed_kmh", `-3`}, CodeOutOfRange, "speed_kmh"},
		{"position heading", "patrol.position", []string{"heading_deg", `400`}, CodeOutOfRange, "heading_deg"},

		// patrol.status.
		{"answer accepted", "patrol.status", []string{"status", `"accepted"`}, ok, ""},
		{"answer declined", "patrol.status", []string{"status", `"declined"`}, ok, ""},
		{"answer on_scene", "patrol.status", []string{"status", `"on_scene"`}, ok, ""},
		{"answer cleared", "patrol.status", []string{"status", `"cleared"`}, ok, ""},
		{"answer available", "patrol.status", []string{"status", `"available"`}, CodeOutOfRange, "status"},
		{"dispatch_id empty", "patrol.status", []string{"dispatch_id", `""`}, CodeOutOfRange, "dispatch_id"},

		// Fields of another type are unknown fields; personal ones are not.
		{"heartbeat with plate", "device.heartbeat", []string{"plate", `"whatever"`}, ok, ""},
		{"heartbeat with lane", "device.heartbeat", []string{"lane", `"x"`}, ok, ""},
		{"heartbeat with buyer_id", "device.heartbeat", []string{"buyer_id", `"11010519491231002X"`}, CodePersonalField, "buyer_id"},
		{"detection with buyer_name", "camera.detection", []string{"buyer_name", `"张三"`}, CodePersonalField, "buyer_name"},
		{"heartbeat with BUYER_ID", "device.heartbeat", []string{"BUYER_ID", `"11010519491231002X"`}, CodePersonalField, "buyer_id"},
		{"fuel with Buyer_Name too", "fuel.purchase", []string{"Buyer_Name", `"张三"`}, CodePersonalField, "buyer_name"},
		{"raw with normalised fields", "fuel.purchase", []string{"buyer_pseudonym", `"abc"`, "plate_valid", `1`, "attrs", `[]`}, ok, ""},
	}
	d := newTestDecoder()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e Event
			err := d.Decode(msg(t, tt.typ, tt.kv...), &e)
			checkErr(t, err, tt.code, tt.field)
			if err == nil {
				roundTrip(t, &e)
			}
		})
	}
}

// validID completes 17 digits with their check character.
func validID(first17 string) string {
	sum := 0
	for i, w := range []int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2} {
		sum += int(first17[i]-'0') * w
	}
	return first17 + string("10X98765432"[sum%11])
}

func TestDecodeMalformed(t *testing.T) {
	valid := string(readValid(t, "device.heartbeat"))
	valid = strings.TrimSpace(valid)
	body := valid[1 : len(valid)-1] // the members without braces
	nest := func(n int) string { return repeat("[", n) + repeat("]", n) }
	tests := []struct {
		name string
		in   string
		code Code
	}{
		{"empty", "", CodeMalformed},
		{"space", "  \n", CodeMalformed},
		{"array", "[" + valid + "]", CodeMalformed},
		{"string", `"hello"`, CodeMalformed},
		{"null", `null`, CodeMalformed},
		{"open", "{" + body, CodeMalformed},
		{"cut", valid[:len(valid)/2], CodeMalformed},
		{"trailing comma", "{" + body + ",}", CodeMalformed},
		{"leading comma", "{," + body + "}", CodeMalformed},
		{"missing colon", `{"id" "x",` + body[len(`"id":"kk-03-hb-1440",`):] + "}", CodeMalformed},
		{"single quotes", `{'id':'x'}`, CodeMalformed},
		{"unquoted key", `{id:"x"}`, CodeMalformed},
		{"trailing garbage", valid + "x", CodeMalformed},
		{"two objects", valid + valid, CodeMalformed},
		{"trailing white space", " \t\r\n" + valid + "\n\n", ""},
		{"BOM", "\ufeff" + valid, CodeMalformed},
		{"duplicate known key", "{" + body + `,"lat":1}`, CodeMalformed},
		{"duplicate type", "{" + body + `,"type":"device.heartbeat"}`, CodeMalformed},
		{"duplicate unknown key", "{" + body + `,"x":1,"x":1}`, CodeMalformed},
		{"duplicate escaped key", "{" + body + `,"x":1,"\u0078":1}`, CodeMalformed},
		{"duplicate escaped known key", "{" + body + `,"l\u0061t":1}`, CodeMalformed},
		{"duplicate among many", "{" + body + manyKeys(40) + `,"k7":0}`, CodeMalformed},
		{"many unique keys", "{" + body + manyKeys(40) + "}", ""},
		{"duplicate nested key kept", "{" + body + `,"x":{"a":1,"a":2}}`, ""},
		{"invalid UTF-8 in value", "{" + body + ",\"x\":\"\xff\"}", CodeMalformed},
		{"invalid UTF-8 in key", "{" + body + ",\"\xc3\x28\":1}", CodeMalformed},
		{"invalid UTF-8 outside string", "{" + body + "}\xff", CodeMalformed},
		{"overlong UTF-8", "{" + body + ",\"x\":\"\xc0\xaf\"}", CodeMalformed},
		{"surrogate in UTF-8", "{" + body + ",\"x\":\"\xed\xa0\x80\"}", CodeMalformed},
		{"lone high surrogate", "{" + body + `,"x":"\ud800"}`, CodeMalformed},
		{"lone low surrogate", "{" + body + `,"x":"\udc00"}`, CodeMalformed},
		{"reversed surrogates", "{" + body + `,"x":"\udc00\ud800"}`, CodeMalformed},
		{"high then char", "{" + body + `,"x":"\ud800x"}`, CodeMalformed},
		{"surrogate pair", "{" + body + `,"x":"\ud83d\ude00"}`, ""},
		{"bad escape", "{" + body + `,"x":"\x41"}`, CodeMalformed},
		{"short unicode escape", "{" + body + `,"x":"\u12"}`, CodeMalformed},
		{"bad hex", "{" + body + `,"x":"\u12g4"}`, CodeMalformed},
		{"control char", "{" + body + ",\"x\":\"a\tb\"}", CodeMalformed},
		{"NUL in string", "{" + body + ",\"x\":\"a\x00b\"}", CodeMalformed},
		{"escaped NUL", "{" + body + `,"x":"a\u0000b"}`, ""},
		{"unterminated string", "{" + body + `,"x":"abc`, CodeMalformed},
		{"backslash at end", "{" + body + `,"x":"abc\`, CodeMalformed},
		{"leading zero", "{" + body + `,"x":01}`, CodeMalformed},
		{"plus sign", "{" + body + `,"x":+1}`, CodeMalformed},
		{"bare minus", "{" + body + `,"x":-}`, CodeMalformed},
		{"dot no digits", "{" + body + `,"x":1.}`, CodeMalformed},
		{"leading dot", "{" + body + `,"x":.5}`, CodeMalformed},
		{"exponent no digits", "{" + body + `,"x":1e}`, CodeMalformed},
		{"exponent sign only", "{" + body + `,"x":1e+}`, CodeMalformed},
		{"hex number", "{" + body + `,"x":0x10}`, CodeMalformed},
		{"NaN", "{" + body + `,"x":NaN}`, CodeMalformed},
		{"Infinity", "{" + body + `,"x":Infinity}`, CodeMalformed},
		{"exponent ok", "{" + body + `,"x":-1.5E+300}`, ""},
		{"tru", "{" + body + `,"x":tru}`, CodeMalformed},
		{"True", "{" + body + `,"x":True}`, CodeMalformed},
		{"nul", "{" + body + `,"x":nul}`, CodeMalformed},
		{"literals ok", "{" + body + `,"x":[true,false,null]}`, ""},
		{"unclosed array", "{" + body + `,"x":[1,2}`, CodeMalformed},
		{"array trailing comma", "{" + body + `,"x":[1,]}`, CodeMalformed},
		{"object in array bad", "{" + body + `,"x":[{"a"}]}`, CodeMalformed},
		{"depth 32", "{" + body + `,"x":` + nest(32) + "}", ""},
		{"depth 33", "{" + body + `,"x":` + nest(33) + "}", CodeMalformed},
		{"depth 10000", "{" + body + `,"x":` + nest(10000) + "}", CodeMalformed},
		{"comment", "{" + body + `/* hi */}`, CodeMalformed},
	}
	d := newTestDecoder()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e Event
			err := d.Decode([]byte(tt.in), &e)
			checkErr(t, err, tt.code, "")
			if err != nil && !strings.HasPrefix(err.Error(), "malformed JSON at byte ") {
				t.Errorf("Error() = %q", err)
			}
			if err == nil {
				roundTrip(t, &e)
			}
		})
	}
}

func manyKeys(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `,"k%d":%d`, i, i)
	}
	return b.String()
}

func TestDecodeTooLarge(t *testing.T) {
	m := msg(t, "device.heartbeat", "pad", q(repeat("p", 200)))
	d := &Decoder{Now: func() time.Time { return testNow }, MaxSize: len(m)}
	var e Event
	if err := d.Decode(m, &e); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	d.MaxSize = len(m) - 1
	err := d.Decode(m, &e)
	checkErr(t, err, CodeTooLarge, "")
	if want := fmt.Sprintf("message too large: %d bytes, limit %d", len(m), len(m)-1); err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}

	// The default limit is 64 KiB.
	var z Decoder
	big := msg(t, "device.heartbeat", "pad", q(repeat("p", 64<<10)))
	checkErr(t, z.Decode(big, &e), CodeTooLarge, "")
}

func TestDecodeEscapes(t *testing.T) {
	d := newTestDecoder()
	in := `{"id":"a\"b\\c\/d\b\f\n\r\t\u00e9\u9102\ud83d\ude00","type":"camera.health",` +
		`"device_id":"\u0063am","time":"2026-11-26T08:15:00+08:00","lat":1,"lon":2,` +
		`"st\u0061tus":"\u006fk","detail":"\u0000x"}`
	var e Event
	if err := d.Decode([]byte(in), &e); err != nil {
		t.Fatal(err)
	}
	want := Event{
		ID: "a\"b\\c/d\b\f\n\r\té鄂😀", Type: TypeCameraHealth, DeviceID: "cam",
		Time: time.Date(2026, 11, 26, 8, 15, 0, 0, cst), Lat: 1, Lon: 2,
		Status: "ok", Detail: "\x00x",
	}
	if diff := cmp.Diff(&want, &e, eventOpts); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	out := roundTrip(t, &e)
	if want := `{"id":"a\"b\\c/d\b\f\n\r\té鄂😀",`; !strings.HasPrefix(string(out), want) {
		t.Errorf("AppendJSON = %s, want prefix %s", out, want)
	}
}

func TestDecodeAttrs(t *testing.T) {
	d := newTestDecoder()
	in := `{ "vendor" : { "model" : "DS-2CD\u00e9", "fw" : [ 5 , 7 ] } ,"id":"x","type":"camera.health",` +
		`"device_id":"cam","time":"2026-11-26T08:15:00+08:00","lat":1,"lon":2,"status":"ok",` +
		`"plate":"鄂F12345", "n":-1.5e3,"t":true,"f":false,"z":null,"s":"a\"b","e":{},"a":[],` +
		"\"w\"\t:\n\"ws\" }"
	var e Event
	if err := d.Decode([]byte(in), &e); err != nil {
		t.Fatal(err)
	}
	want := `{"vendor":{ "model" : "DS-2CD\u00e9", "fw" : [ 5 , 7 ] },"plate":"鄂F12345","n":-1.5e3,` +
		`"t":true,"f":false,"z":null,"s":"a\"b","e":{},"a":[],"w":"ws"}`
	if diff := cmp.Diff(want, string(e.Attrs)); diff != "" {
		t.Errorf("Attrs (-want +got):\n%s", diff)
	}
	if e.Plate != "" {
		t.Errorf("Plate = %q on camera.health", e.Plate)
	}
	out := roundTrip(t, &e)
	if !strings.HasSuffix(string(out), `,"attrs":`+want+"}") {
		t.Errorf("AppendJSON = %s", out)
	}

	// A message without unknown fields has no Attrs, even after one that had.
	if err := d.Decode(readValid(t, "device.heartbeat"), &e); err != nil {
		t.Fatal(err)
	}
	if len(e.Attrs) != 0 {
		t.Errorf("Attrs = %s, want none", e.Attrs)
	}
}

func TestDecodePlates(t *testing.T) {
	tests := []struct {
		plate string
		want  string
		valid bool
	}{
		{"鄂F12345", "鄂F12345", true},
		{"鄂F·12345", "鄂F12345", true},
		{"鄂F・12345", "鄂F12345", true},
		{"鄂F•12345", "鄂F12345", true},
		{"鄂Ｆ１２３４５", "鄂F12345", true},
		{"鄂f12345", "鄂F12345", true},
		{"鄂f a1 2-34", "鄂FA1234", true},
		{" 鄂F 1234 5 ", "鄂F12345", true},
		{"鄂F.12345", "鄂F12345", true},
		{"鄂F－１２３４５", "鄂F12345", true},
		{"鄂FD12345", "鄂FD12345", true},
		{"鄂F123456", "鄂F123456", true},
		{"鄂F12345D", "鄂F12345D", true},
		{"鄂F1234学", "鄂F1234学", true},
		{"鄂A1234警", "鄂A1234警", true},
		{"鄂F1234挂", "鄂F1234挂", true},
		{"粤Z1234港", "粤Z1234港", true},
		{"粤Z1234澳", "粤Z1234澳", true},
		{"鄂F1234领", "鄂F1234领", true},
		{"京A0000O", "京A0000O", false}, // O not in the serial
		{"鄂F1234I", "鄂F1234I", false}, // nor I
		{"鄂F1234", "鄂F1234", false},   // too short
		{"鄂F1234567", "鄂F1234567", false},
		{"鄂12345F", "鄂12345F", false},   // letter second
		{"X F12345", "X F12345", false}, // no province
		{"F12345", "F12345", false},
		{"鄂FD1234学", "鄂FD1234学", false}, // suffix on a new-energy length
		{"鄂F123学5", "鄂F123学5", false},
		{"无牌", "无牌", false},
		{"unknown", "unknown", false},
	}
	d := newTestDecoder()
	for _, tt := range tests {
		t.Run(tt.plate, func(t *testing.T) {
			for _, typ := range []string{"checkpoint.pass", "camera.detection", "drone.detection", "fuel.purchase"} {
				var e Event
				if err := d.Decode(msg(t, typ, "plate", q(tt.plate)), &e); err != nil {
					t.Fatalf("%s: %v", typ, err)
				}
				if e.Plate != tt.want || e.PlateValid != tt.valid {
					t.Errorf("%s: plate %q valid %v, want %q %v", typ, e.Plate, e.PlateValid, tt.want, tt.valid)
				}
				roundTrip(t, &e)
			}
		})
	}

	// An empty plate is not valid; it is absent where plate is optional.
	var e Event
	if err := d.Decode(msg(t, "checkpoint.pass", "plate", `""`), &e); err != nil {
		t.Fatal(err)
	}
	if e.Plate != "" || e.PlateValid {
		t.Errorf("empty plate: %q %v", e.Plate, e.PlateValid)
	}
	out := roundTrip(t, &e)
	if !strings.Contains(string(out), `"plate":"","plate_valid":false`) {
		t.Errorf("AppendJSON = %s", out)
	}
}

func TestDecodeDefaults(t *testing.T) {
	d := newTestDecoder()
	var e Event
	if err := d.Decode(msg(t, "camera.detection", "count", "-", "confidence", "-", "plate", "-", "plate_color", "-", "behavior", "-", "track_id", "-"), &e); err != nil {
		t.Fatal(err)
	}
	if e.Count != 1 || e.Confidence != 1 {
		t.Errorf("count %d confidence %v, want defaults 1 and 1", e.Count, e.Confidence)
	}
	out := string(roundTrip(t, &e))
	for _, s := range []string{`"count":1`, `"confidence":1`} {
		if !strings.Contains(out, s) {
			t.Errorf("AppendJSON = %s, want %s", out, s)
		}
	}
	for _, s := range []string{`"plate"`, `"behavior"`, `"track_id"`, `"plate_valid"`} {
		if strings.Contains(out, s) {
			t.Errorf("AppendJSON = %s, has %s", out, s)
		}
	}

	if err := d.Decode(msg(t, "checkpoint.pass", "heading_deg", "-", "confidence", "null"), &e); err != nil {
		t.Fatal(err)
	}
	if e.HasHeading || e.Confidence != 1 {
		t.Errorf("HasHeading %v confidence %v", e.HasHeading, e.Confidence)
	}
	if out := string(roundTrip(t, &e)); strings.Contains(out, "heading_deg") {
		t.Errorf("AppendJSON = %s, has heading_deg", out)
	}
}

func TestDecodeFuture(t *testing.T) {
	now := time.Date(2026, 11, 26, 8, 20, 0, 0, cst)
	d := &Decoder{Now: func() time.Time { return now }}
	at := func(t time.Time) []byte {
		return []byte(`{"id":"a","type":"device.heartbeat","device_id":"d","time":"` + t.Format(time.RFC3339Nano) + `","lat":0,"lon":0}`)
	}
	var e Event
	checkErr(t, d.Decode(at(now.Add(5*time.Minute)), &e), "", "")
	checkErr(t, d.Decode(at(now.Add(5*time.Minute+time.Nanosecond)), &e), CodeFuture, "time")
	checkErr(t, d.Decode(at(now.Add(5*time.Minute).UTC()), &e), "", "")
	checkErr(t, d.Decode(at(now.Add(5*time.Minute+time.Millisecond).In(time.FixedZone("", -5*3600))), &e), CodeFuture, "time")

	d.MaxFuture = time.Second
	checkErr(t, d.Decode(at(now.Add(time.Second)), &e), "", "")
	checkErr(t, d.Decode(at(now.Add(2*time.Second)), &e), CodeFuture, "time")

	// DecodeNormalized does not check the future.
	var p Event
	d.MaxFuture = 0
	if err := d.Decode(at(now), &p); err != nil {
		t.Fatal(err)
	}
	p.Time = now.Add(24 * time.Hour)
	if err := d.DecodeNormalized(AppendJSON(nil, &p), &e); err != nil {
		t.Errorf("DecodeNormalized of a future event: %v", err)
	}
}

func TestDecodeReusesEvent(t *testing.T) {
	d := newTestDecoder()
	var e Event
	if err := d.Decode(readValid(t, "checkpoint.pass"), &e); err != nil {
		t.Fatal(err)
	}
	if err := d.Decode(readValid(t, "patrol.status"), &e); err != nil {
		t.Fatal(err)
	}
	if e.Lane != 0 || e.Plate != "" || e.HasHeading {
		t.Errorf("fields of the previous event left: %+v", e)
	}
	// A failed decode leaves nothing of the previous event behind that a
	// caller could mistake for valid: the type is reset at least.
	if err := d.Decode([]byte(`{`), &e); err == nil || e.Type != TypeUnknown {
		t.Errorf("after failure: err %v type %v", err, e.Type)
	}
}

func TestDecodeKeepsNoReferenceToInput(t *testing.T) {
	d := newTestDecoder()
	in := readValid(t, "camera.detection")
	var e Event
	if err := d.Decode(in, &e); err != nil {
		t.Fatal(err)
	}
	want := e.ID
	for i := range in {
		in[i] = 'x'
	}
	if e.ID != want || !strings.HasPrefix(string(e.Attrs), `{"vendor"`) {
		t.Errorf("event changed with the input: %q %s", e.ID, e.Attrs)
	}
}

func TestErrorMessages(t *testing.T) {
	d := newTestDecoder()
	tests := []struct {
		in   []byte
		want string
	}{
		{msg(t, "device.heartbeat", "lat", "-"), `missing field "lat"`},
		{msg(t, "fuel.purchase", "buyer_id", `"110105194912310021"`), `invalid buyer_id: wrong check digit`},
		{[]byte(`{"id":1,}`), `malformed JSON at byte 8: expected string key`},
		{msg(t, "device.heartbeat", "type", q("x"+repeat("y", 40))), `invalid type: unknown type "x` + repeat("y", 31) + `"…`},
		{msg(t, "device.heartbeat", "type", q("to 110105194912310021")), `invalid type: unknown type "to 110105********0021"`},
		{msg(t, "checkpoint.pass", "lane", `1.5`), `invalid lane: want integer, got 1.5`},
		{msg(t, "checkpoint.pass", "lane", `"1"`), `invalid lane: want number, got string`},
		{msg(t, "device.heartbeat", "lat", `91`), `invalid lat: 91 is not within -90..90`},
		{msg(t, "camera.health", "status", `"bad"`), `invalid status: "bad" is not one of ok, video_loss, tamper, blur, offline`},
		{msg(t, "device.heartbeat", "time", `"2026-11-26T08:35:00+08:00"`), `invalid time: 15m0s in the future, limit 5m0s`},
	}
	for _, tt := range tests {
		var e Event
		err := d.Decode(tt.in, &e)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Decode(%s) = %v, want %s", tt.in, err, tt.want)
		}
	}
	if CodeOf(nil) != "" || CodeOf(errors.New("x")) != CodeMalformed ||
		CodeOf(fmt.Errorf("cannot decode: %w", &Error{Code: CodeFuture})) != CodeFuture {
		t.Error("CodeOf")
	}
}

// TestErrorsHoldNoPersonalData breaks every rule a fuel purchase can break
// and checks that no error message holds the buyer's ID number or name.
func TestErrorsHoldNoPersonalData(t *testing.T) {
	const id, name = "11010519491231002X", "欧阳娜娜"
	bad := "110105194912310021"
	d := newTestDecoder()
	cases := [][]string{
		{"buyer_id", q(bad)},
		{"buyer_id", q(bad[:17])},
		{"buyer_id", q(bad + "1")},
		{"buyer_id", q(bad[:10] + "abcdefg" + "X")},
		{"buyer_id", bad},
		{"buyer_id", `["` + bad + `"]`},
		{"buyer_id", `{"n":"` + bad + `"}`},
		{"buyer_name", q(repeat(name, 20))},
		{"buyer_name", q("")},
		{"buyer_name", `["` + name + `"]`},
		{"buyer_name", "12"},
		{"type", q(bad)},
		{"station_id", q(bad + repeat("x", 200))},
		{"fuel", q(bad)},
		{"volume_l", "-" + bad},
		{"time", q(bad)},
		{bad, "1", bad, "2"}, // duplicate key named like an ID number
		{"id", q("")},
	}
	for _, kv := range cases {
		m := msg(t, "fuel.purchase", append([]string{"buyer_id", q(id), "buyer_name", q(name)}, kv...)...)
		if kv[0] == bad {
			m = []byte(strings.Replace(string(m), "{", `{"`+bad+`":1,"`+bad+`":2,`, 1))
		}
		var e Event
		err := d.Decode(m, &e)
		if err == nil {
			t.Errorf("Decode(%s) succeeded", m)
			continue
		}
		s := err.Error()
		for _, secret := range []string{id, bad, bad[:17], name, "娜娜"} {
			if strings.Contains(s, secret) {
				t.Errorf("error %q holds %q", s, secret)
			}
		}
	}
	// Malformed JSON right after the personal values.
	for _, in := range []string{
		`{"buyer_id":"` + id + `" "buyer_name":"` + name + `"}`,
		`{"buyer_name":"` + name + `",,}`,
		`{"buyer_id":` + bad + `x}`,
		`{"buyer_name":` + name + `}`,
	} {
		var e Event
		if err := d.Decode([]byte(in), &e); err == nil {
			t.Errorf("Decode(%s) succeeded", in)
		} else if s := err.Error(); strings.Contains(s, bad) || strings.Contains(s, id) || strings.Contains(s, "娜娜") {
			t.Errorf("error %q holds personal data", s)
		}
	}
}

func TestDecodeNormalized(t *testing.T) {
	d := newTestDecoder()
	p := newTestPseudonymizer(t)
	var raw Event
	if err := d.Decode(readValid(t, "fuel.purchase"), &raw); err != nil {
		t.Fatal(err)
	}
	p.Apply(&raw)
	norm := string(AppendJSON(nil, &raw))

	replace := func(old, new string) []byte {
		if !strings.Contains(norm, old) {
			t.Fatalf("%s not in %s", old, norm)
		}
		return []byte(strings.Replace(norm, old, new, 1))
	}
	tests := []struct {
		name  string
		in    []byte
		code  Code
		field string
	}{
		{"as written", []byte(norm), "", ""},
		{"raw buyer_id", replace(`"station_id"`, `"buyer_id":"11010519491231002X","station_id"`), CodePersonalField, "buyer_id"},
		{"raw buyer_name", replace(`"station_id"`, `"buyer_name":"张三","station_id"`), CodePersonalField, "buyer_name"},
		{"unmasked id", replace(`"buyer_id_masked":"110105********002X"`, `"buyer_id_masked":"11010519491231002X"`), CodePersonalField, "buyer_id_masked"},
		{"no pseudonym", replace(`"buyer_pseudonym":`, `"x":`), CodeMissing, "buyer_pseudonym"},
		{"no masked id", replace(`"buyer_id_masked":`, `"x":`), CodeMissing, "buyer_id_masked"},
		{"no masked name", replace(`"buyer_name_masked":`, `"x":`), CodeMissing, "buyer_name_masked"},
		{"no plate_valid", replace(`,"plate_valid":true`, ``), CodeMissing, "plate_valid"},
		{"plate_valid wrong", replace(`"plate_valid":true`, `"plate_valid":false`), CodeOutOfRange, "plate_valid"},
		{"plate_valid string", replace(`"plate_valid":true`, `"plate_valid":"true"`), CodeWrongType, "plate_valid"},
		{"far future", replace(`"time":"2026-11-26T08:10:02.000+08:00"`, `"time":"2036-11-26T08:10:02.000+08:00"`), "", ""},
		{"before 2000", replace(`"time":"2026-11-26T08:10:02.000+08:00"`, `"time":"1996-11-26T08:10:02.000+08:00"`), CodeOutOfRange, "time"},
		{"range still checked", replace(`"volume_l":25.5`, `"volume_l":-1`), CodeOutOfRange, "volume_l"},
		{"attrs not object", replace(`"station_id"`, `"attrs":[1],"station_id"`), CodeWrongType, "attrs"},
		{"attrs null", replace(`"station_id"`, `"attrs":null,"station_id"`), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e Event
			checkErr(t, d.DecodeNormalized(tt.in, &e), tt.code, tt.field)
		})
	}

	// attrs is merged with unknown fields beside it; the personal keys are
	// refused inside it too, and a key may not be in both.
	hb := `{"id":"a","type":"device.heartbeat","device_id":"d","time":"2026-11-26T08:15:00.000+08:00","lat":0,"lon":0`
	var e Event
	if err := d.DecodeNormalized([]byte(hb+`,"x":1,"attrs":{"y":[2],"z":{"w":3}},"v":4}`), &e); err != nil {
		t.Fatal(err)
	}
	if got, want := string(e.Attrs), `{"x":1,"y":[2],"z":{"w":3},"v":4}`; got != want {
		t.Errorf("Attrs = %s, want %s", got, want)
	}
	checkErr(t, d.DecodeNormalized([]byte(hb+`,"x":1,"attrs":{"x":2}}`), &e), CodeMalformed, "")
	checkErr(t, d.DecodeNormalized([]byte(hb+`,"attrs":{"x":1,"x":2}}`), &e), CodeMalformed, "")
	checkErr(t, d.DecodeNormalized([]byte(hb+`,"attrs":{"buyer_id":"x"}}`), &e), CodePersonalField, "attrs")
	checkErr(t, d.DecodeNormalized([]byte(hb+`,"attrs":{"Buyer_Name":"x"}}`), &e), CodePersonalField, "attrs")
	checkErr(t, d.DecodeNormalized([]byte(hb+`,"BUYER_ID":"x"}`), &e), CodePersonalField, "buyer_id")
	checkErr(t, d.DecodeNormalized([]byte(hb+`,"attrs":{},"attrs":{}}`), &e), CodeMalformed, "")
	// attrs members may nest as deeply as unknown fields of a raw message.
	deep := repeat("[", maxDepth) + repeat("]", maxDepth)
	if err := d.DecodeNormalized([]byte(hb+`,"attrs":{"x":`+deep+`}}`), &e); err != nil {
		t.Errorf("deep attrs: %v", err)
	}
	// A normalised message may be a little larger than MaxSize.
	d.MaxSize = len(norm) - 100
	if err := d.DecodeNormalized([]byte(norm), &e); err != nil {
		t.Errorf("slightly over MaxSize: %v", err)
	}
}

func TestParseNumber(t *testing.T) {
	for _, s := range []string{"0", "-0", "1", "-1", "32.009", "112.122", "0.1", "0.3", "123456789012345", "1234567890123456",
		"0.000000000000001", "0.0000000000000001", "99999999999999.9", "1.5e3", "-2E-5", "1e400", "4.35", "0.93", "270", "-90.0000001"} {
		want, werr := strconv.ParseFloat(s, 64)
		got, err := parseNumber(s)
		if math.Float64bits(got) != math.Float64bits(want) || (err == nil) != (werr == nil) {
			t.Errorf("parseNumber(%s) = %v %v, want %v %v", s, got, err, want, werr)
		}
	}
}

func FuzzParseNumber(f *testing.F) {
	f.Add(uint64(32009), uint8(3), false)
	f.Fuzz(func(t *testing.T, mant uint64, frac uint8, neg bool) {
		s := strconv.FormatUint(mant, 10)
		if k := int(frac % 20); k > 0 {
			for len(s) <= k {
				s = "0" + s
			}
			s = s[:len(s)-k] + "." + s[len(s)-k:]
		}
		if neg {
			s = "-" + s
		}
		want, _ := strconv.ParseFloat(s, 64)
		if got, _ := parseNumber(s); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("parseNumber(%s) = %v, want %v", s, got, want)
		}
	})
}

func TestPeekType(t *testing.T) {
	for _, tt := range []struct {
		msg  string
		want Type
	}{
		{`{"id":"a","type":"fuel.purchase","device_id":"d"}`, TypeFuelPurchase},
		{`{"id":"a","type":"device.heartbeat"}`, TypeDeviceHeartbeat},
		{`{"id":"a","type":"fuel.purchase_x"}`, TypeUnknown},
		{`{"id":"a","type":"fuel.purch`, TypeUnknown},
		{`{"id":"a","kind":"fuel.purchase"}`, TypeUnknown},
		{``, TypeUnknown},
		{`{"id":"` + strings.Repeat("x", 1100) + `","type":"fuel.purchase"}`, TypeUnknown},
	} {
		if got := PeekType([]byte(tt.msg)); got != tt.want {
			t.Errorf("PeekType(%.60s) = %v, want %v", tt.msg, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { PeekType([]byte(`{"id":"a","type":"camera.health"}`)) }); n != 0 {
		t.Errorf("PeekType allocates %v times", n)
	}
}

func TestDecodeShared(t *testing.T) {
	d := newTestDecoder()
	p := newTestPseudonymizer(t)
	for _, typ := range typeNamesList() {
		raw := readValid(t, typ)
		var e Event
		if err := d.Decode(raw, &e); err != nil {
			t.Fatal(err)
		}
		p.Apply(&e)
		norm := AppendJSON(nil, &e)
		for _, tc := range []struct {
			name         string
			in           []byte
			copy, shared func([]byte, *Event) error
		}{
			{"raw", raw, d.Decode, d.DecodeShared},
			{"normalised", norm, d.DecodeNormalized, d.DecodeNormalizedShared},
		} {
			t.Run(typ+"/"+tc.name, func(t *testing.T) {
				var copied, shared Event
				if err := tc.copy(tc.in, &copied); err != nil {
					t.Fatal(err)
				}
				if err := tc.shared(tc.in, &shared); err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(copied, shared); diff != "" {
					t.Errorf("shared decode differs (-copied +shared):\n%s", diff)
				}
				// It makes no copy: one allocation fewer (once Attrs has
				// room, none in the normalised form; the raw form's plates
				// and ID numbers are normalised into new strings).
				nc := testing.AllocsPerRun(100, func() { _ = tc.copy(tc.in, &copied) })
				ns := testing.AllocsPerRun(100, func() { _ = tc.shared(tc.in, &shared) })
				if ns != nc-1 || tc.name == "normalised" && ns != 0 {
					t.Errorf("%v allocations per decode, %v with the copy", ns, nc)
				}
				// Its strings are the caller's bytes.
				in := slices.Clone(tc.in)
				if err := tc.shared(in, &shared); err != nil {
					t.Fatal(err)
				}
				in[bytes.Index(in, []byte(shared.ID))] ^= 1
				if shared.ID == copied.ID {
					t.Error("the event's id does not share the input")
				}
			})
		}
	}
	// Errors are the same.
	var e Event
	checkErr(t, d.DecodeShared([]byte(`{"type":1}`), &e), CodeWrongType, "type")
	checkErr(t, d.DecodeNormalizedShared([]byte(`{"type":1}`), &e), CodeWrongType, "type")
}
