package event

import "testing"

func BenchmarkDecode(b *testing.B) {
	benchRaw(b, (*Decoder).Decode)
}

// BenchmarkDecodeShared is BenchmarkDecode without the copy of the
// message (ingest's reads).
func BenchmarkDecodeShared(b *testing.B) {
	benchRaw(b, (*Decoder).DecodeShared)
}

func benchRaw(b *testing.B, decode func(*Decoder, []byte, *Event) error) {
	d := newTestDecoder()
	for _, typ := range typeNamesList() {
		in := readValid(b, typ)
		b.Run(typ, func(b *testing.B) {
			var e Event
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				if err := decode(d, in, &e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeNormalized(b *testing.B) {
	benchNormalized(b, (*Decoder).DecodeNormalized)
}

// BenchmarkDecodeNormalizedShared is BenchmarkDecodeNormalized without the
// copy of the message (the rule engine's replay and live reads).
func BenchmarkDecodeNormalizedShared(b *testing.B) {
	benchNormalized(b, (*Decoder).DecodeNormalizedShared)
}

func benchNormalized(b *testing.B, decode func(*Decoder, []byte, *Event) error) {
	d := newTestDecoder()
	p := newTestPseudonymizer(b)
	for _, typ := range typeNamesList() {
		var e Event
		if err := d.Decode(readValid(b, typ), &e); err != nil {
			b.Fatal(err)
		}
		p.Apply(&e)
		in := AppendJSON(nil, &e)
		b.Run(typ, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				if err := decode(d, in, &e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	d := newTestDecoder()
	p := newTestPseudonymizer(b)
	for _, typ := range typeNamesList() {
		var e Event
		if err := d.Decode(readValid(b, typ), &e); err != nil {
			b.Fatal(err)
		}
		p.Apply(&e)
		buf := AppendJSON(nil, &e)
		b.Run(typ, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				buf = AppendJSON(buf[:0], &e)
			}
		})
	}
}

func BenchmarkPseudonymize(b *testing.B) {
	p := newTestPseudonymizer(b)
	e := Event{Type: TypeFuelPurchase}
	b.ReportAllocs()
	for b.Loop() {
		e.BuyerID, e.BuyerName = "11010519491231002X", "张三丰"
		p.Apply(&e)
	}
}

func BenchmarkPlateNormalize(b *testing.B) {
	for _, tt := range []struct{ name, plate string }{
		{"normal", "鄂F12345"},
		{"middle_dot", "鄂F·12345"},
		{"full_width", "鄂Ｆ１２３４５"},
		{"invalid", "无牌车辆"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				NormalizePlate(tt.plate)
			}
		})
	}
}

func BenchmarkRedactPersonal(b *testing.B) {
	clean := readValid(b, "camera.detection")
	fuel := readValid(b, "fuel.purchase")
	for _, tt := range []struct {
		name string
		in   []byte
	}{{"nothing", clean}, {"fuel", fuel}} {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tt.in)))
			for b.Loop() {
				RedactPersonal(tt.in)
			}
		})
	}
}
