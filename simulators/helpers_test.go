package simulators

import (
	"sync"
	"testing"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
)

var testCity = sync.OnceValues(city.Default)

func mustCity(t testing.TB) *city.City {
	t.Helper()
	c, err := testCity()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// record is one emitted message, copied.
type record struct {
	topic, key string
	value      []byte
	want       Want
	e          event.Event
}

// run steps a simulation from its start for d in steps of one second and
// returns every message, decoded. A valid message that does not decode
// fails the test.
func run(t testing.TB, s *Sim, d time.Duration) []record {
	t.Helper()
	var out []record
	dec := event.Decoder{Now: func() time.Time { return s.cfg.Start.Add(d + time.Hour) }}
	for now := s.cfg.Start; !now.After(s.cfg.Start.Add(d)); now = now.Add(time.Second) {
		s.Step(now, func(m *Message) {
			r := record{topic: m.Topic, key: string(m.Key), value: append([]byte(nil), m.Value...), want: m.Want}
			err := dec.Decode(r.value, &r.e)
			switch {
			case m.Want == WantReject && err == nil:
				t.Errorf("malformed message accepted: %s", r.value)
			case m.Want != WantReject && err != nil:
				t.Fatalf("message rejected: %v\n%s", err, r.value)
			}
			// Detach the decoded strings from the decoder's copy.
			out = append(out, r)
		})
	}
	return out
}

// stepEvents steps a device simulator and returns copies of its events.
func stepEvents(from, to time.Time, every time.Duration, step func(now time.Time, emit Emit)) []event.Event {
	var out []event.Event
	for now := from; !now.After(to); now = now.Add(every) {
		step(now, func(e *event.Event) { out = append(out, *e) })
	}
	return out
}

// decodeOK encodes e in wire form and decodes it, as ingest would.
func decodeOK(t *testing.T, e *event.Event) {
	t.Helper()
	var d event.Decoder
	d.Now = func() time.Time { return e.Time.Add(time.Minute) }
	var got event.Event
	b := AppendWire(nil, e)
	if err := d.Decode(b, &got); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if e.Plate != "" && !got.PlateValid {
		t.Errorf("plate %q not valid: %s", e.Plate, b)
	}
}
