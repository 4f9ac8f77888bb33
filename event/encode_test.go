package event

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestAppendJSONGolden checks the normalised form of the valid message of
// each type against testdata/golden; go test -update rewrites the files.
func TestAppendJSONGolden(t *testing.T) {
	d := newTestDecoder()
	p := newTestPseudonymizer(t)
	for _, typ := range typeNamesList() {
		t.Run(typ, func(t *testing.T) {
			var e Event
			if err := d.Decode(readValid(t, typ), &e); err != nil {
				t.Fatal(err)
			}
			p.Apply(&e)
			got := append(AppendJSON(nil, &e), '\n')
			if !json.Valid(got) {
				t.Fatalf("not JSON: %s", got)
			}
			path := filepath.Join("testdata", "golden", typ+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("AppendJSON (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAppendJSONNoPersonalFields(t *testing.T) {
	d := newTestDecoder()
	var e Event
	if err := d.Decode(readValid(t, "fuel.purchase"), &e); err != nil {
		t.Fatal(err)
	}
	// Not pseudonymised: the raw fields are still set and still not written.
	out := string(AppendJSON(nil, &e))
	for _, s := range []string{`"buyer_id"`, `"buyer_name"`, e.BuyerID, e.BuyerName} {
		if strings.Contains(out, s) {
			t.Errorf("AppendJSON = %s, holds %s", out, s)
		}
	}
	// Fields of other types are not written.
	e.Lane = 3
	e.MissionID = "m"
	if out := string(AppendJSON(nil, &e)); strings.Contains(out, "lane") || strings.Contains(out, "mission_id") {
		t.Errorf("AppendJSON = %s, has fields of other types", out)
	}
}

func TestAppendString(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", `""`},
		{"plain", `"plain"`},
		{`a"b\c`, `"a\"b\\c"`},
		{"\n\r\t\b\f\x00\x1f", `"\n\r\t\b\f\u0000\u001f"`},
		{"鄂F·12345 😀", `"鄂F·12345 😀"`},
		{"</script>&", `"</script>&"`},
		{"\u2028\u2029", "\"\u2028\u2029\""},
		{"a\xffb", `"a\ufffdb"`},
		{"\xe9\x84", `"\ufffd\ufffd"`},
		{"\x7f", "\"\x7f\""},
	}
	for _, tt := range tests {
		got := string(appendString(nil, tt.in))
		if got != tt.want {
			t.Errorf("appendString(%q) = %s, want %s", tt.in, got, tt.want)
		}
		var back string
		if err := json.Unmarshal([]byte(got), &back); err != nil {
			t.Errorf("appendString(%q) = %s: %v", tt.in, got, err)
		}
	}
}

func TestAppendFloat(t *testing.T) {
	for _, v := range []float64{0, math.Copysign(0, -1), 1, -1, 0.5, 32.009, 112.122, 1e-6, 9.99e-7, 1e-7, 1e20, 1e21, 123456789.125,
		-1.5e300, math.SmallestNonzeroFloat64, math.MaxFloat64, 0.1 + 0.2} {
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendFloat(nil, v); string(got) != string(want) {
			t.Errorf("appendFloat(%v) = %s, want %s", v, got, want)
		}
	}
	if got := string(appendFloat(nil, math.NaN())); got != "0" {
		t.Errorf("appendFloat(NaN) = %s", got)
	}
}

func TestAppendTime(t *testing.T) {
	tests := []struct {
		in   time.Time
		want string
	}{
		{time.Date(2026, 11, 26, 8, 15, 30, 125e6, cst), "2026-11-26T08:15:30.125+08:00"},
		{time.Date(2026, 11, 26, 8, 15, 30, 0, cst), "2026-11-26T08:15:30.000+08:00"},
		{time.Date(2026, 11, 26, 0, 15, 30, 5e6, time.UTC), "2026-11-26T00:15:30.005Z"},
		{time.Date(2026, 11, 26, 0, 15, 30, 123456789, time.UTC), "2026-11-26T00:15:30.123456789Z"},
		{time.Date(2026, 11, 26, 0, 15, 30, 123400000, time.UTC), "2026-11-26T00:15:30.1234Z"},
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", -(9*3600+30*60))), "2026-01-02T03:04:05.000-09:30"},
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 5*3600+45*60)), "2026-01-02T03:04:05.000+05:45"},
	}
	for _, tt := range tests {
		got := string(appendTime(nil, tt.in))
		if got != tt.want {
			t.Errorf("appendTime(%v) = %s, want %s", tt.in, got, tt.want)
		}
		back, ok := parseTime(got)
		if !ok || !back.Equal(tt.in) {
			t.Errorf("parseTime(%s) = %v %v, want %v", got, back, ok, tt.in)
		}
		_, off := back.Zone()
		if _, want := tt.in.Zone(); off != want {
			t.Errorf("parseTime(%s) offset %d, want %d", got, off, want)
		}
	}
}

// TestParseTimeMatchesStdlib checks parseTime against time.Parse on the
// forms both accept.
func TestParseTimeMatchesStdlib(t *testing.T) {
	for _, s := range []string{
		"2026-11-26T08:15:30.125+08:00", "2000-01-01T00:00:00Z", "2024-02-29T23:59:59.999999999-23:59",
		"2100-12-31T12:00:00+14:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.5Z", "2026-03-01T00:00:00+00:00",
		"1900-02-28T00:00:00-00:30", "2026-06-30T16:00:00.1+05:30",
	} {
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := parseTime(s)
		if !ok || !got.Equal(want) {
			t.Errorf("parseTime(%s) = %v %v, want %v", s, got, ok, want)
		}
		_, off := got.Zone()
		if _, woff := want.Zone(); off != woff {
			t.Errorf("parseTime(%s) offset %d, want %d", s, off, woff)
		}
	}
}

func TestAppendJSONAllocs(t *testing.T) {
	d := newTestDecoder()
	p := newTestPseudonymizer(t)
	for _, typ := range typeNamesList() {
		var e Event
		if err := d.Decode(readValid(t, typ), &e); err != nil {
			t.Fatal(err)
		}
		p.Apply(&e)
		buf := make([]byte, 0, 4096)
		if n := testing.AllocsPerRun(100, func() { buf = AppendJSON(buf[:0], &e) }); n != 0 {
			t.Errorf("%s: %v allocations per AppendJSON", typ, n)
		}
	}
}
