package store

import (
	"strings"
	"testing"
	"time"

	"citywatch/event"
)

// TestBatchColumnsAligned adds one event of every type and checks that each
// table's columns all have as many values as the table has rows, so that no
// row of AddEvent forgets a column.
func TestBatchColumnsAligned(t *testing.T) {
	b := NewBatch()
	now := time.Date(2026, 11, 26, 8, 15, 30, 125e6, time.UTC)
	for _, typ := range append(event.Types(), event.TypeUnknown) {
		e := &event.Event{ID: "e-" + typ.String(), Type: typ, DeviceID: "d1", Time: now, Attrs: []byte(`{"x":1}`)}
		b.AddEvent(e, now)
	}
	b.AddRejected(&event.Rejected{Topic: "citywatch.camera", Key: []byte("k"), Payload: []byte("{")})
	if got, want := b.Len(), len(event.Types())+2; got != want {
		t.Errorf("Len = %d, want %d", got, want)
	}
	for _, tbl := range b.tables() {
		for _, c := range tbl.columns() {
			if c.length() != tbl.len() {
				t.Errorf("%s.%s has %d values, table has %d rows", tbl.name(), c.name, c.length(), tbl.len())
			}
		}
	}
	b.Reset()
	if b.Len() != 0 || b.MaxTableLen() != 0 {
		t.Errorf("after Reset: Len %d, MaxTableLen %d, want 0", b.Len(), b.MaxTableLen())
	}
	for _, tbl := range b.tables() {
		for _, c := range tbl.columns() {
			if c.length() != 0 {
				t.Errorf("after Reset %s.%s has %d values", tbl.name(), c.name, c.length())
			}
		}
	}
}

func TestBatchRouting(t *testing.T) {
	tests := []struct {
		typ   event.Type
		table string
	}{
		{event.TypeCameraDetection, tableEvents},
		{event.TypeCheckpointPass, tableEvents},
		{event.TypeDroneTelemetry, tableEvents},
		{event.TypeDroneDetection, tableEvents},
		{event.TypePatrolPosition, tableEvents},
		{event.TypePatrolStatus, tableEvents},
		{event.TypeUnknown, tableEvents},
		{event.TypeFuelPurchase, tableFuel},
		{event.TypeCameraHealth, tableHealth},
		{event.TypeDeviceHeartbeat, tableHealth},
	}
	for _, tt := range tests {
		t.Run(tt.typ.String(), func(t *testing.T) {
			b := NewBatch()
			b.AddEvent(&event.Event{ID: "x", Type: tt.typ}, time.Now())
			for _, tbl := range b.tables() {
				want := 0
				if tbl.name() == tt.table {
					want = 1
				}
				if tbl.len() != want {
					t.Errorf("%s has %d rows, want %d", tbl.name(), tbl.len(), want)
				}
			}
		})
	}
}

// TestBatchCopiesBytes checks that the caller may reuse Attrs, Key and
// Payload after adding.
func TestBatchCopiesBytes(t *testing.T) {
	b := NewBatch()
	attrs := []byte(`{"a":1}`)
	e := &event.Event{ID: "x", Type: event.TypeCameraDetection, Attrs: attrs}
	b.AddEvent(e, time.Now())
	key, payload := []byte("key"), []byte("payload")
	b.AddRejected(&event.Rejected{Key: key, Payload: payload})
	copy(attrs, "XXXXXXX")
	copy(key, "XXX")
	copy(payload, "XXXXXXX")
	if got := string(b.events.attrs[0]); got != `{"a":1}` {
		t.Errorf("attrs = %q after the caller reused its buffer", got)
	}
	if got := string(b.rejected.key[0]); got != "key" {
		t.Errorf("key = %q after the caller reused its buffer", got)
	}
	if got := string(b.rejected.payload[0]); got != "payload" {
		t.Errorf("payload = %q after the caller reused its buffer", got)
	}
}

// TestFuelHasNoRawColumns guards the schema of fuel purchases: the insert
// has no column that could hold a raw ID number or name.
func TestFuelHasNoRawColumns(t *testing.T) {
	for _, c := range (&fuelRows{}).columns() {
		if c.name == "buyer_id" || c.name == "buyer_name" {
			t.Errorf("fuel_purchases has column %s", c.name)
		}
	}
	for _, m := range migrations {
		for _, s := range m.stmts {
			if !strings.Contains(s, ".fuel_purchases") {
				continue
			}
			for _, raw := range []string{"buyer_id ", "buyer_name "} {
				if strings.Contains(s, raw) {
					t.Errorf("migration %d creates fuel_purchases with column %q", m.version, raw)
				}
			}
		}
	}
}

func TestAddEventDoesNotAllocate(t *testing.T) {
	b := NewBatch()
	evs := sampleEventsInternal()
	now := time.Now()
	fill := func() {
		b.Reset()
		for i := range evs {
			b.AddEvent(&evs[i], now)
		}
		b.AddRejected(&event.Rejected{Topic: "t", Key: []byte("k"), Payload: []byte("p")})
	}
	fill() // grow the columns once
	// Reset allocates a few small slices per batch (the table and column
	// lists), never per row.
	if n := testing.AllocsPerRun(10, fill); n > 10 {
		t.Errorf("refilling a batch of %d rows allocates %.0f times", len(evs), n)
	}
}

func sampleEventsInternal() []event.Event {
	now := time.Now()
	var evs []event.Event
	for i := 0; i < 1000; i++ {
		evs = append(evs, event.Event{
			ID: "id", Type: event.Type(1 + i%9), DeviceID: "dev", Time: now,
			Plate: "鄂F12345", Attrs: []byte(`{"vendor":"hik"}`),
		})
	}
	return evs
}

func TestSplitTime(t *testing.T) {
	tests := []struct {
		in      time.Time
		sec     int64
		ms      uint16
		comment string
	}{
		{time.Date(2026, 11, 26, 8, 15, 30, 125e6, time.FixedZone("CST", 8*3600)), 1795652130, 125, "offset kept out"},
		{time.Unix(0, 0), 0, 0, "epoch"},
		{time.Unix(-5, 0), 0, 0, "before 1970"},
		{time.Unix(1<<33, 0), 1<<32 - 1, 999, "after 2106"},
	}
	for _, tt := range tests {
		sec, ms := splitTime(tt.in)
		if sec != tt.sec || ms != tt.ms {
			t.Errorf("%s: splitTime(%v) = %d, %d; want %d, %d", tt.comment, tt.in, sec, ms, tt.sec, tt.ms)
		}
	}
}

func TestExpired(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		day  int
		keep int
		want bool
	}{
		{20261118, 7, true},
		{20261119, 7, false}, // its last hours are younger than 7 days
		{20261126, 1, false},
		{20261125, 1, false}, // ends at 26 00:00, within a day of now
		{20261124, 1, true},
		{20251125, 365, true},
		{20251126, 365, false},
	}
	for _, tt := range tests {
		if got := expired(tt.day, tt.keep, now); got != tt.want {
			t.Errorf("expired(%d, %d) = %v, want %v", tt.day, tt.keep, got, tt.want)
		}
	}
}

func TestPartitionDay(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"20261126", true},
		{"20261332", false},
		{"all", false},
		{"2026112", false},
		{"-2026112", false},
		{"202611260", false},
	}
	for _, tt := range tests {
		if _, ok := partitionDay(tt.in); ok != tt.ok {
			t.Errorf("partitionDay(%q) ok = %v, want %v", tt.in, ok, tt.ok)
		}
	}
}
