package event

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// testNow is the receiver's clock in tests: 2026-11-26 08:20 in Xiangyang.
var testNow = time.Date(2026, 11, 26, 0, 20, 0, 0, time.UTC)

// testKey is the pseudonym key of the golden files.
var testKey = []byte("citywatch-test-key-0123456789")

// eventOpts compares Events: times by instant (time.Time.Equal) and an
// empty Attrs equal to none.
var eventOpts = cmp.Options{cmpopts.EquateEmpty()}

func newTestDecoder() *Decoder {
	return &Decoder{Now: func() time.Time { return testNow }}
}

func newTestPseudonymizer(t testing.TB) *Pseudonymizer {
	t.Helper()
	p, err := NewPseudonymizer(testKey)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// typeNamesList is every wire type name.
func typeNamesList() []string {
	var names []string
	for _, t := range Types() {
		names = append(names, t.String())
	}
	return names
}

// readValid returns the valid raw message of a type from testdata/valid.
func readValid(t testing.TB, typ string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "valid", typ+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// msg returns the valid message of type typ with fields changed: kv holds
// key, raw JSON value pairs; the value "-" deletes the key.
func msg(t testing.TB, typ string, kv ...string) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(readValid(t, typ), &m); err != nil {
		t.Fatal(err)
	}
	if len(kv)%2 != 0 {
		t.Fatalf("msg: odd kv %q", kv)
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "-" {
			delete(m, kv[i])
			continue
		}
		m[kv[i]] = json.RawMessage(kv[i+1])
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("msg: %v", err)
	}
	return b
}

// q returns s as a JSON string.
func q(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// roundTrip pseudonymises a decoded event, encodes it, decodes the
// normalised form and checks that it gives the same event and the same
// bytes again. It returns the normalised form.
func roundTrip(t testing.TB, e *Event) []byte {
	t.Helper()
	p, err := NewPseudonymizer(testKey)
	if err != nil {
		t.Fatal(err)
	}
	p.Apply(e)
	out := AppendJSON(nil, e)
	if got := PeekType(out); got != e.Type {
		t.Fatalf("PeekType(%s) = %v, want %v", out, got, e.Type)
	}
	var d Decoder
	var got Event
	if err := d.DecodeNormalized(out, &got); err != nil {
		t.Fatalf("DecodeNormalized(%s): %v", out, err)
	}
	if diff := cmp.Diff(e, &got, eventOpts); diff != "" {
		t.Fatalf("round trip through %s (-want +got):\n%s", out, diff)
	}
	_, wantOff := e.Time.Zone()
	if _, off := got.Time.Zone(); off != wantOff || !got.Time.Equal(e.Time) {
		t.Fatalf("round trip time %v, want %v", got.Time, e.Time)
	}
	if again := AppendJSON(nil, &got); string(again) != string(out) {
		t.Fatalf("re-encoded\n%s\nwant\n%s", again, out)
	}
	return out
}

func repeat(s string, n int) string { return strings.Repeat(s, n) }
