package event

import (
	"strings"
	"testing"
	"time"
)

// TestWorstCaseInputs checks that no input of the maximum size takes long:
// duplicate detection, nesting and redaction are all linear.
func TestWorstCaseInputs(t *testing.T) {
	hb := `{"id":"a","type":"device.heartbeat","device_id":"d","time":"2026-11-26T08:15:00+08:00","lat":0,"lon":0`
	var keys strings.Builder
	keys.WriteString(hb)
	for i := 0; keys.Len() < DefaultMaxSize-20; i++ {
		keys.WriteString(`,"` + itoa(i) + `":0`)
	}
	keys.WriteString("}")
	inputs := map[string]string{
		"many keys": keys.String(),
		"nesting":   hb + `,"x":[` + strings.Repeat(repeat("[", 31)+repeat("]", 31)+",", 900) + `0]}`,
		"escapes":   hb + `,"x":"` + strings.Repeat(`\ud83d\ude00`, 5000) + `"}`,
		"numbers":   hb + `,"x":[` + strings.Repeat(`-1.5e-300,`, 6000) + `0]}`,
	}
	d := newTestDecoder()
	for name, in := range inputs {
		if len(in) > DefaultMaxSize {
			t.Fatalf("%s: %d bytes", name, len(in))
		}
		start := time.Now()
		var e Event
		for range 10 {
			if err := d.Decode([]byte(in), &e); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if el := time.Since(start) / 10; el > 20*time.Millisecond {
			t.Errorf("%s: %v per decode", name, el)
		}
		roundTrip(t, &e)
	}
	for name, in := range map[string]string{
		"digits":   strings.Repeat("1", DefaultMaxSize),
		"ids":      strings.Repeat("11010519491231002X ", DefaultMaxSize/19),
		"keys":     strings.Repeat(`"buyer_id":"`, DefaultMaxSize/12),
		"pairs":    strings.Repeat(`"buyer_name":"张三",`, DefaultMaxSize/20),
		"escapes":  `"buyer_name":"` + strings.Repeat(`\`, DefaultMaxSize),
		"numbers":  strings.Repeat(`:110105194912310021,`, DefaultMaxSize/20),
		"unclosed": strings.Repeat(`"`, DefaultMaxSize),
	} {
		start := time.Now()
		out := RedactPersonal([]byte(in))
		if el := time.Since(start); el > 50*time.Millisecond {
			t.Errorf("RedactPersonal %s: %v", name, el)
		}
		if hasIDNumber(out) {
			t.Errorf("RedactPersonal %s left an ID number", name)
		}
	}
}

// TestRoundTripAtMaxSize checks that the normalised form of a message of
// the maximum size still fits DecodeNormalized's limit.
func TestRoundTripAtMaxSize(t *testing.T) {
	pad := func(typ, key, unit string, kv ...string) []byte {
		base := msg(t, typ, kv...)
		n := (DefaultMaxSize - len(base) - len(key) - 6) / len(unit)
		m := msg(t, typ, append(kv, key, `"`+strings.Repeat(unit, n)+`"`)...)
		if len(m) > DefaultMaxSize || len(m) < DefaultMaxSize-64 {
			t.Fatalf("%s: %d bytes", typ, len(m))
		}
		return m
	}
	d := newTestDecoder()
	for name, in := range map[string][]byte{
		"detail of escapes": pad("camera.health", "detail", `\b\f\/`),
		"attrs":             pad("camera.detection", "zz", `x`),
		"short numbers":     pad("drone.telemetry", "zz", `\u0001`, "lat", `1e-6`, "lon", `1e-6`, "alt_m", `1e20`, "speed_ms", `1e20`),
		"fuel":              pad("fuel.purchase", "zz", `x`, "buyer_name", q(repeat("娜", 64)), "lat", "1e-6"),
	} {
		var e Event
		if err := d.Decode(in, &e); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		roundTrip(t, &e)
	}
}
