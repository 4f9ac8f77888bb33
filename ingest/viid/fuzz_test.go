package viid

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"citywatch/event"
)

// FuzzDecode runs the GA/T 1400 decoder and mapping on any body: no
// panic, and every record either fails with a reason or maps to an event
// whose fields are in the contract's ranges.
func FuzzDecode(f *testing.F) {
	for _, name := range []string{"motorvehicles.json", "vendors.json", "faces.json", "persons.json"} {
		f.Add(readFile(f, name))
	}
	f.Add([]byte(`{"motorvehiclelistobject":{"motorvehicleobject":{"MotorVehicleID":1,"TollgateID":"kk-001","LaneNo":"1","PassTime":20261126081530}}}`))
	f.Add(vendorRecord)
	m := mapper{devices: devices, loc: shanghai}
	f.Fuzz(func(t *testing.T, body []byte) {
		// The member scanner on any bytes, not only on records that
		// decoded: it stops, and notes at most maxMisspelt.
		if ms := findMisspelt(body, motorVehicleFields, 1<<len(motorVehicleFields.names)-1, nil); len(ms) > maxMisspelt {
			t.Fatalf("%d misspellings noted", len(ms))
		}
		for _, kind := range []struct {
			outer, inner string
			fn           func([]byte, *event.Event, *recordInfo) error
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
				var ri recordInfo
				if err := kind.fn(raw, &e, &ri); err != nil {
					if err.Error() == "" {
						t.Fatal("error without reason")
					}
					continue
				}
				if len(ri.misspelt) > maxMisspelt {
					t.Fatalf("%d misspellings noted", len(ri.misspelt))
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
	if len(e.Attrs) > 0 && (!json.Valid(e.Attrs) || e.Attrs[0] != '{' || len(e.Attrs) > maxImageAttrBytes+2) {
		t.Fatalf("attrs %q", e.Attrs)
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

// FuzzDigest runs the Digest header parser, and the check of a Register
// with that Authorization, on any header: no panic, a bounded map of
// lower-case names, and no header accepted twice (its nonce count is
// spent) or without the response the password gives.
func FuzzDigest(f *testing.F) {
	cfg := Config{Username: testUser, Password: testPass}
	cfg.SetDefaults()
	newTestAuth := func() *auth {
		a := newAuth(cfg)
		a.key = [32]byte{1} // fixed, so that the seeds' nonces are ours
		return a
	}
	nonce := newTestAuth().nonce(testNow)
	f.Add(digestHeader(testUser, testPass, cfg.Realm, nonce, PathRegister, "00000001", "0a4f113b", "auth"))
	f.Add(digestHeader(testUser, testPass, cfg.Realm, nonce, PathRegister, "", "", ""))
	f.Add(`Digest realm="citywatch", qop="auth", nonce="` + nonce + `", opaque="", algorithm=MD5, stale=true`)
	f.Add(`digest username="a\"b", realm=citywatch,nonce=` + nonce + `,uri=/VIID/System/Register, nc=00000001`)
	f.Add(`Digest username="", username=""`)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, h string) {
		p, err := parseDigest(h)
		if err == nil {
			if len(p) > maxDigestParams {
				t.Fatalf("%d parameters", len(p))
			}
			for k := range p {
				if k == "" || k != strings.ToLower(k) {
					t.Fatalf("parameter name %q", k)
				}
			}
		}
		a := newTestAuth()
		accepted := 0
		for range 2 {
			req := httptest.NewRequest("POST", PathRegister, nil)
			req.Header.Set("Authorization", h)
			if _, ok := a.check(httptest.NewRecorder(), req, testNow, log); ok {
				accepted++
			}
		}
		switch {
		case accepted > 1:
			t.Fatalf("accepted twice: %q", h)
		case accepted == 1 && (err != nil ||
			strings.ToLower(p["response"]) != DigestResponse(testUser, cfg.Realm, testPass, "POST", p["uri"], p["nonce"], p["nc"], p["cnonce"], p["qop"])):
			t.Fatalf("accepted without the right response: %q", h)
		}
	})
}
