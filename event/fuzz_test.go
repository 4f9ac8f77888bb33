package event

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// addSeeds adds the valid message of every type, and a few variants, to f.
func addSeeds(f *testing.F, dir string) {
	for _, typ := range typeNamesList() {
		b, err := os.ReadFile(filepath.Join("testdata", dir, typ+".json"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// checkDecoded checks the property of every decoder fuzz test: an error is
// an *Error with a code, and a decoded event round-trips.
func checkDecoded(t *testing.T, e *Event, err error) {
	t.Helper()
	if err != nil {
		var de *Error
		if !errors.As(err, &de) || de.Code == "" {
			t.Fatalf("error %v (%T) is not an *Error with a code", err, err)
		}
		return
	}
	for _, s := range []string{e.ID, e.DeviceID, e.Plate, e.Status, e.Detail, e.VehicleColor, e.StationID, e.BuyerName, string(e.Attrs)} {
		if !utf8.ValidString(s) {
			t.Fatalf("decoded invalid UTF-8 %q", s)
		}
	}
	if e.Type == TypeUnknown || e.Time.Year() < 2000 {
		t.Fatalf("decoded %+v", e)
	}
	roundTrip(t, e)
}

func FuzzDecode(f *testing.F) {
	addSeeds(f, "valid")
	f.Add([]byte(`{"id":"a\u00e9\ud83d\ude00","type":"device.heartbeat","device_id":"d","time":"2026-11-26T08:15:00.123456789+05:45","lat":-0,"lon":1e-7,"x":[{"y":null}],"attrs":{"a":1}}`))
	f.Add([]byte(`{"id":"a","type":"checkpoint.pass","device_id":"d","time":"2026-11-26T08:15:00Z","lat":0,"lon":0,"lane":1,"plate":"","plate_color":"","vehicle_type":"other","speed_kmh":0}`))
	f.Add([]byte(`{"type":"fuel.purchase","buyer_id":"11010519491231002x"`))
	d := newTestDecoder()
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Event
		err := d.Decode(data, &e)
		checkShared(t, d.DecodeShared, data, &e, err) // before checkDecoded changes e
		checkDecoded(t, &e, err)
	})
}

// checkShared checks that decode, a decoding without the copy, gives the
// event (e) or the error (err) that the decoding with it gave for data.
func checkShared(t *testing.T, decode func([]byte, *Event) error, data []byte, e *Event, err error) {
	t.Helper()
	var shared Event
	serr := decode(slices.Clone(data), &shared)
	if (err == nil) != (serr == nil) || err != nil && err.Error() != serr.Error() {
		t.Fatalf("shared decode: error %v, copied: %v", serr, err)
	}
	if err == nil {
		if diff := cmp.Diff(*e, shared); diff != "" {
			t.Fatalf("shared decode differs (-copied +shared):\n%s", diff)
		}
	}
}

func FuzzDecodeNormalized(f *testing.F) {
	addSeeds(f, "golden")
	f.Add([]byte(`{"id":"a","type":"device.heartbeat","device_id":"d","time":"2026-11-26T08:15:00.000+08:00","lat":0,"lon":0,"x":1,"attrs":{"y":{"z":[1]}}}`))
	d := newTestDecoder()
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Event
		err := d.DecodeNormalized(data, &e)
		checkShared(t, d.DecodeNormalizedShared, data, &e, err) // before checkDecoded changes e
		checkDecoded(t, &e, err)
	})
}

// FuzzDecodeFields builds messages of every type from fuzzed field values,
// which reaches the validation and round trip of decodable events more
// often than mutating raw bytes does.
func FuzzDecodeFields(f *testing.F) {
	f.Add(uint8(0), "cam-1", "鄂F·12345", "镜头\b被遮挡", 32.009, 112.122, 0.93, int64(125e6), int16(480), "vendor", `{"a":[1]}`)
	f.Add(uint8(4), "\u0000", "鄂Ｆ１２３４５", "", -90.0, 180.0, 1e-7, int64(999999999), int16(-570), "", `null`)
	d := newTestDecoder()
	f.Fuzz(func(t *testing.T, typ uint8, id, plate, text string, lat, lon, num float64, ns int64, offMin int16, extraKey, extraRaw string) {
		types := Types()
		ty := types[int(typ)%len(types)]
		loc := time.FixedZone("", int(offMin)%(24*60)*60)
		tm := testNow.Add(-time.Duration(ns % int64(24*time.Hour))).In(loc)
		fields := map[string]any{
			"id": id, "type": ty.String(), "device_id": id, "time": tm.Format(time.RFC3339Nano),
			"lat": lat, "lon": lon,
			"camera_class": "B", "object": "vehicle", "count": num, "plate": plate, "plate_color": "",
			"confidence": num, "track_id": text, "alt_m": num, "status": text, "detail": text,
			"lane": num, "vehicle_type": "other", "vehicle_color": text, "speed_kmh": num, "heading_deg": num,
			"station_id": id, "buyer_id": validID("4206021990010112" + strconv.Itoa(int(typ)%10)), "buyer_name": text,
			"fuel": "diesel", "container": "vehicle", "volume_l": num, "permit_no": text,
			"mission_id": id, "speed_ms": num, "battery_pct": num, "dispatch_id": id,
		}
		switch ty {
		case TypeCameraHealth:
			fields["status"] = "blur"
		case TypePatrolPosition:
			fields["status"] = "busy"
		case TypePatrolStatus:
			fields["status"] = "cleared"
		}
		b, err := json.Marshal(fields)
		if err != nil {
			return // NaN or infinity
		}
		if _, dup := fields[extraKey]; !dup && json.Valid([]byte(extraRaw)) {
			b = append(b[:len(b)-1], ',')
			b = append(append(b, q(extraKey)...), ':')
			b = append(append(b, extraRaw...), '}')
		}
		var e Event
		err = d.Decode(b, &e)
		checkDecoded(t, &e, err)
	})
}
