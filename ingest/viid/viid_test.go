package viid

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"citywatch/event"
	"citywatch/internal/city"
)

type fakeDevices map[string]*city.Device

func (f fakeDevices) Device(id string) *city.Device { return f[id] }

var devices = fakeDevices{
	"kk-001":      {ID: "kk-001", Kind: city.KindCheckpoint, Class: city.ClassInterProvincial, Lat: 32.39, Lon: 112.11},
	"kk-002":      {ID: "kk-002", Kind: city.KindCheckpoint, Class: city.ClassElectronic, Lat: 32.37, Lon: 112.22},
	"cam-a-00001": {ID: "cam-a-00001", Kind: city.KindCamera, Class: "A", Lat: 32.1, Lon: 112.07},
	"cam-b-00002": {ID: "cam-b-00002", Kind: city.KindCamera, Class: "B", Lat: 32.2, Lon: 112.08},
}

var shanghai = func() *time.Location {
	l, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		return time.FixedZone("CST", 8*3600)
	}
	return l
}()

// fakePub records what it is asked to publish; err, when set, is returned.
type fakePub struct {
	mu  sync.Mutex
	evs []event.Event
	err error
}

func (p *fakePub) Publish(_ context.Context, evs []event.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	p.evs = append(p.evs, evs...)
	return nil
}

// testNow is the clock of the test servers.
var testNow = time.Date(2026, 11, 26, 0, 16, 0, 0, time.UTC)

func newTestServer(t testing.TB, cfg Config, pub Publisher) *httptest.Server {
	t.Helper()
	srv, _ := newTestServerS(t, cfg, pub)
	return srv
}

// newTestServerS is newTestServer that also returns the Server, for its
// metrics and clock.
func newTestServerS(t testing.TB, cfg Config, pub Publisher) (*httptest.Server, *Server) {
	t.Helper()
	s, mux := newHandler(t, cfg, pub)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, s
}

// newHandler returns the Server at testNow and a mux with its endpoints,
// for tests that call it directly (to choose the client's address).
func newHandler(t testing.TB, cfg Config, pub Publisher) (*Server, *http.ServeMux) {
	t.Helper()
	s, err := New(cfg, devices, shanghai, pub, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return testNow }
	mux := http.NewServeMux()
	s.Register(mux)
	return s, mux
}

type answer struct {
	ResponseStatusListObject struct {
		ResponseStatusObject []status
	}
}

func post(t testing.TB, url string, body []byte, hdr map[string]string) (*http.Response, answer) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/VIID+JSON")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &a)
	return resp, a
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRealWorldShapes(t *testing.T) {
	pub := &fakePub{}
	srv, s := newTestServerS(t, Config{}, pub)
	type st struct {
		Code int
		Id   string
		Why  string
	}
	tests := []struct {
		path, file string
		statuses   []st
	}{
		{PathMotorVehicles, "motorvehicles.json", []st{
			{0, "42060200001190000001022026112608153000001", "OK"},
			{0, "mv-2", "OK"},
			{0, "mv-3", "OK"},
			{8, "mv-4", `unknown tollgate "kk-999"`},
			{8, "mv-5", `PassTime: "26-11-2026" is not a GA/T 1400 time (yyyyMMddHHmmss)`},
			{8, "mv-6", "cannot decode record"},
		}},
		{PathFaces, "faces.json", []st{{0, "f-1", "OK"}}},
		{PathPersons, "persons.json", []st{{0, "p-1", "OK"}, {8, "p-2", `unknown camera "kk-001"`}}},
		// As checkpoint and camera platforms send them (Hikvision and
		// Dahua shapes: padded codes, numbers as numbers, the PlateNumber
		// alias, GA 24.8 colour letters, image lists, GA/T 1400 fields the
		// receiver does not read), and with a vendor's misspellings: a
		// misspelt mandatory field fails its record alone, naming the
		// field and the member that may have been meant.
		{PathMotorVehicles, "vendors.json", []st{
			{0, "42060200001190000001022026112608153500001", "OK"},
			{0, "mv-dh-1", "OK"},
			{0, "mv-cam-1", "OK"},
			{0, "mv-typo-speed", "OK"},
			{8, "mv-typo-time", `PassTime missing (is "PassTimme" a misspelling of PassTime?)`},
			{8, "mv-typo-lane", `LaneNo missing or not a lane number ≥ 1 (is "LaneN0" a misspelling of LaneNo?)`},
			{8, "mv-typo-tollgate", `unknown camera "42060200001190000001" (is "TolgateID" a misspelling of TollgateID?)`},
			{0, "mv-odd-images", "OK"},
		}},
	}
	for _, tt := range tests {
		resp, a := post(t, srv.URL+tt.path, readFile(t, tt.file), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: HTTP %d", tt.path, resp.StatusCode)
		}
		var got []st
		for _, s := range a.ResponseStatusListObject.ResponseStatusObject {
			why := s.StatusString
			if strings.HasPrefix(why, "cannot decode record") {
				why = "cannot decode record"
			}
			got = append(got, st{s.StatusCode, s.ID, why})
			if s.RequestURL != tt.path || s.LocalTime != "20261126081600" {
				t.Errorf("status %+v", s)
			}
		}
		if diff := cmp.Diff(tt.statuses, got); diff != "" {
			t.Errorf("%s (-want +got)\n%s", tt.path, diff)
		}
	}
	want := []event.Event{
		{ID: "viid-mv-42060200001190000001022026112608153000001", Type: event.TypeCheckpointPass, DeviceID: "kk-001",
			Time: time.Date(2026, 11, 26, 8, 15, 30, 0, shanghai), Lat: 32.39, Lon: 112.11,
			Lane: 2, Plate: "鄂F12345", PlateColor: "blue", SpeedKmh: 63.5, VehicleType: "car", VehicleColor: "white", Confidence: 0.95},
		{ID: "viid-mv-mv-2", Type: event.TypeCheckpointPass, DeviceID: "kk-002",
			Time: time.Date(2026, 11, 26, 8, 15, 31, 250e6, shanghai), Lat: 32.37, Lon: 112.22,
			Lane: 1, Plate: "鄂A·D1234", PlateColor: "green", VehicleType: "truck", Confidence: 1},
		{ID: "viid-mv-mv-3", Type: event.TypeCameraDetection, DeviceID: "cam-a-00001", CameraClass: "A",
			Time: time.Date(2026, 11, 26, 8, 15, 32, 0, shanghai), Lat: 32.1, Lon: 112.07, Object: "vehicle", Count: 1, Confidence: 1},
		{ID: "viid-face-f-1", Type: event.TypeCameraDetection, DeviceID: "cam-b-00002", CameraClass: "B",
			Time: time.Date(2026, 11, 26, 8, 15, 40, 0, shanghai), Lat: 32.2, Lon: 112.08, Object: "face", Count: 1, Confidence: 1},
		{ID: "viid-person-p-1", Type: event.TypeCameraDetection, DeviceID: "cam-a-00001", CameraClass: "A",
			Time: time.Date(2026, 11, 26, 0, 15, 41, 0, time.UTC), Lat: 32.1, Lon: 112.07, Object: "person", Count: 1, Confidence: 1},
		// vendors.json
		{ID: "viid-mv-42060200001190000001022026112608153500001", Type: event.TypeCheckpointPass, DeviceID: "kk-001",
			Time: time.Date(2026, 11, 26, 8, 15, 35, 0, shanghai), Lat: 32.39, Lon: 112.11,
			Lane: 2, Plate: "鄂F1234警", PlateColor: "white", SpeedKmh: 45, VehicleType: "car", VehicleColor: "black", Confidence: 0.88,
			Attrs: []byte(`{"images":[{"id":"42060200001190000001022026112608153500001","path":"http://10.20.1.5:6120/pic?=d7ei703-*0a1i","type":"01"},` +
				`{"id":"42060200001190000001022026112608153500002","path":"http://10.20.1.5:6120/pic?=d7ei703-*0a1j","type":"02"}]}`)},
		{ID: "viid-mv-mv-dh-1", Type: event.TypeCheckpointPass, DeviceID: "kk-002",
			Time: time.Date(2026, 11, 26, 8, 15, 36, 123e6, shanghai), Lat: 32.37, Lon: 112.22,
			Lane: 3, Plate: "鄂A12345", PlateColor: "yellow", SpeedKmh: 52.5, VehicleType: "truck", VehicleColor: "white", Confidence: 1},
		{ID: "viid-mv-mv-cam-1", Type: event.TypeCameraDetection, DeviceID: "cam-a-00001", CameraClass: "A",
			Time: time.Date(2026, 11, 26, 8, 15, 37, 0, shanghai), Lat: 32.1, Lon: 112.07, Object: "vehicle", Count: 1, Confidence: 1,
			Plate: "鄂F54321", PlateColor: "white",
			Attrs: []byte(`{"images":[{"id":"img-cam-1","path":"ftp://10.20.1.9/2026/11/26/img-cam-1.jpg","type":"09"}]}`)},
		// A misspelt optional field is absent: checkpoint.pass requires
		// speed_kmh and has no "unknown", so the speed is 0, and the
		// misspelling is counted.
		{ID: "viid-mv-mv-typo-speed", Type: event.TypeCheckpointPass, DeviceID: "kk-001",
			Time: time.Date(2026, 11, 26, 8, 15, 38, 0, shanghai), Lat: 32.39, Lon: 112.11,
			Lane: 1, Plate: "鄂F22222", PlateColor: "blue", VehicleType: "car", Confidence: 1},
		{ID: "viid-mv-mv-odd-images", Type: event.TypeCheckpointPass, DeviceID: "kk-002",
			Time: time.Date(2026, 11, 26, 8, 15, 42, 0, shanghai), Lat: 32.37, Lon: 112.22,
			Lane: 1, Plate: "鄂F66666", PlateColor: "blue", VehicleType: "other", Confidence: 1},
	}
	if diff := cmp.Diff(want, pub.evs, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("events (-want +got)\n%s", diff)
	}
	// Speeed, PassTimme, LaneN0, TolgateID.
	if n := testutil.ToFloat64(s.met.misspelt.WithLabelValues(PathMotorVehicles)); n != 4 {
		t.Errorf("misspelt fields counted: %v, want 4", n)
	}
}

func TestBadRequests(t *testing.T) {
	pub := &fakePub{}
	srv := newTestServer(t, Config{MaxBodyBytes: 2048}, pub)
	tests := []struct {
		name, body string
		code       int
		reason     string
	}{
		{"not JSON", `{"MotorVehicleListObject":`, 400, "cannot decode body"},
		{"wrong list", `{"FaceListObject":{"FaceObject":[]}}`, 400, "cannot decode body: no MotorVehicleListObject"},
		{"too large", `{"MotorVehicleListObject":{"MotorVehicleObject":[` + strings.Repeat(`{"a":"b"},`, 300) + `{}]}}`, 400, "body larger than 2048 bytes"},
		{"empty list", `{"MotorVehicleListObject":{"MotorVehicleObject":[]}}`, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, a := post(t, srv.URL+PathMotorVehicles, []byte(tt.body), nil)
			if resp.StatusCode != tt.code {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tt.code)
			}
			if tt.reason == "" {
				return
			}
			ss := a.ResponseStatusListObject.ResponseStatusObject
			if len(ss) != 1 || !strings.HasPrefix(ss[0].StatusString, tt.reason) || ss[0].StatusCode == 0 {
				t.Errorf("statuses %+v, want reason %q", ss, tt.reason)
			}
		})
	}
}

func TestBusy(t *testing.T) {
	pub := &fakePub{err: ErrBusy}
	srv := newTestServer(t, Config{RetryAfter: 2 * time.Second}, pub)
	resp, a := post(t, srv.URL+PathMotorVehicles, readFile(t, "motorvehicles.json"), nil)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("HTTP %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	ss := a.ResponseStatusListObject.ResponseStatusObject
	if len(ss) != 6 || ss[0].StatusCode != codeDeviceBusy || ss[3].StatusCode != codeInvalidJSONContent {
		t.Errorf("statuses %+v", ss)
	}
}

func TestParseTime(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
	}{
		{"20261126081530", time.Date(2026, 11, 26, 8, 15, 30, 0, shanghai)},
		{"20261126081530123", time.Date(2026, 11, 26, 8, 15, 30, 123e6, shanghai)},
		{"2026-11-26 08:15:30", time.Date(2026, 11, 26, 8, 15, 30, 0, shanghai)},
		{"2026-11-26T08:15:30+08:00", time.Date(2026, 11, 26, 0, 15, 30, 0, time.UTC)},
		{"2026-11-26T00:15:30.5Z", time.Date(2026, 11, 26, 0, 15, 30, 500e6, time.UTC)},
	}
	for _, tt := range tests {
		got, err := ParseTime(tt.in, shanghai)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "2026112608153", "20261326081530", "yesterday", "2026-11-26"} {
		if _, err := ParseTime(bad, shanghai); err == nil {
			t.Errorf("ParseTime(%q) = nil error", bad)
		}
	}
}

// TestSightingRecords: face and person records map alike, each by the
// names of its own id and time fields, and their errors name those
// fields.
func TestSightingRecords(t *testing.T) {
	m := mapper{devices: devices, loc: shanghai}
	for _, tc := range []struct {
		name string
		fn   func([]byte, *event.Event, *recordInfo) error
		raw  string
		want string // the event's id and object, or the error
	}{
		{"face", m.face, `{"FaceID":"f-1","DeviceID":"cam-a-00001","FaceAppearTime":"20261126081540"}`, "viid-face-f-1 face"},
		{"person by ShotTime", m.person, `{"PersonID":"p-1","DeviceID":"cam-a-00001","ShotTime":"20261126081540"}`, "viid-person-p-1 person"},
		{"face id missing", m.face, `{"PersonID":"p-1","DeviceID":"cam-a-00001","ShotTime":"20261126081540"}`, "FaceID missing"},
		{"person id misspelt", m.person, `{"PesronID":"p-1","DeviceID":"cam-a-00001","ShotTime":"20261126081540"}`, "PersonID missing"},
		{"person time misspelt", m.person, `{"PersonID":"p-1","DeviceID":"cam-a-00001","PersonApearTime":"20261126081540"}`, "PersonAppearTime"},
		{"face undecodable", m.face, `{"FaceID":"f-1","DeviceID":["x"]}`, "cannot decode record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e event.Event
			var ri recordInfo
			err := tc.fn([]byte(tc.raw), &e, &ri)
			got := e.ID + " " + e.Object
			if err != nil {
				got = err.Error()
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want %q in it", got, tc.want)
			}
		})
	}
}
