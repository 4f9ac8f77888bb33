package event

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRejectedRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 26, 8, 15, 30, 125e6, cst)
	tests := []struct {
		name string
		r    Rejected
		has  []string
	}{
		{"text key", Rejected{
			Topic: "citywatch.fuel", Partition: 3, Offset: 1234567890123, Key: []byte("fs-018-t1"),
			Error: `invalid buyer_id: wrong check digit`, Code: CodeCheckDigit, ReceivedAt: at,
			Payload: []byte(`{"buyer_id":"110105********0021"}`),
		}, []string{`"key":"fs-018-t1"`, `"received_at":"2026-11-26T00:15:30.125Z"`, `"code":"bad_check_digit"`, `"partition":3`, `"offset":1234567890123`}},
		{"no key", Rejected{
			Topic: "citywatch.camera", Error: `malformed JSON at byte 0: "x"`, Code: CodeMalformed,
			ReceivedAt: at, Payload: []byte("\x00\xff binary"),
		}, []string{`"key":null`, `"payload":"AP8gYmluYXJ5"`}},
		{"empty key", Rejected{Topic: "t", Key: []byte{}, ReceivedAt: at, Payload: []byte{}}, []string{`"key":""`, `"payload":""`}},
		{"binary key", Rejected{Topic: "t", Key: []byte{0xff, 0x00, 'a'}, ReceivedAt: at, Payload: []byte("{}")},
			[]string{`"key_base64":"/wBh"`}},
		{"escapes", Rejected{Topic: "t\"\n", Key: []byte("鄂\t"), Error: "a\\b", ReceivedAt: at}, []string{`"key":"鄂\t"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := AppendRejectedJSON(nil, &tt.r)
			if !json.Valid(b) {
				t.Fatalf("not JSON: %s", b)
			}
			for _, s := range tt.has {
				if !strings.Contains(string(b), s) {
					t.Errorf("%s lacks %s", b, s)
				}
			}
			var got Rejected
			if err := DecodeRejected(b, &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(&tt.r, &got, eventOpts); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			if (tt.r.Key == nil) != (got.Key == nil) {
				t.Errorf("key nil %v, want %v", got.Key == nil, tt.r.Key == nil)
			}
			if got.ReceivedAt.Location() != time.UTC {
				t.Errorf("ReceivedAt in %v", got.ReceivedAt.Location())
			}
		})
	}
}

func TestRejectedFieldOrder(t *testing.T) {
	r := Rejected{Topic: "citywatch.fuel", Partition: 1, Offset: 2, Key: []byte("k"), Error: "e", Code: CodeMissing,
		ReceivedAt: time.Date(2026, 11, 26, 0, 0, 0, 999999999, time.UTC), Payload: []byte("p")}
	want := `{"topic":"citywatch.fuel","partition":1,"offset":2,"key":"k","error":"e","code":"missing_field",` +
		`"received_at":"2026-11-26T00:00:00.999Z","payload":"cA=="}`
	if got := string(AppendRejectedJSON(nil, &r)); got != want {
		t.Errorf("AppendRejectedJSON =\n%s\nwant\n%s", got, want)
	}
}

func TestDecodeRejectedErrors(t *testing.T) {
	for _, in := range []string{
		``, `[]`, `{"partition":1}`, `{"topic":"t","payload":"!!"}`, `{"topic":"t","key_base64":"!!"}`,
		`{"topic":"t","received_at":"yesterday"}`, `{"topic":"t","key":5}`,
	} {
		var r Rejected
		if err := DecodeRejected([]byte(in), &r); err == nil {
			t.Errorf("DecodeRejected(%s) succeeded", in)
		} else if !strings.HasPrefix(err.Error(), "cannot decode rejected record") {
			t.Errorf("error %q", err)
		}
	}
}

func TestAppendRejectedJSONAllocs(t *testing.T) {
	r := Rejected{Topic: "citywatch.fuel", Key: []byte("k"), Error: "e", Payload: []byte("payload"), ReceivedAt: testNow}
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf = AppendRejectedJSON(buf[:0], &r) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}
