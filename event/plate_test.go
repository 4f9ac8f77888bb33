package event

import (
	"testing"
	"unicode/utf8"
)

func TestNormalizePlate(t *testing.T) {
	tests := []struct {
		in    string
		want  string
		valid bool
	}{
		{"鄂F12345", "鄂F12345", true},
		{"鄂F·12345", "鄂F12345", true},
		{"鄂F‧12345", "鄂F12345", true},
		{"鄂F∙12345", "鄂F12345", true},
		{"鄂F⋅12345", "鄂F12345", true},
		{"鄂F･12345", "鄂F12345", true},
		{"鄂F。12345", "鄂F12345", true},
		{"鄂F—12345", "鄂F12345", true},
		{"鄂Ｆ１２３４５", "鄂F12345", true},
		{"鄂ｆ１２３４５", "鄂F12345", true},
		{"鄂\u3000F\u00a012345", "鄂F12345", true},
		{"鄂f12abc", "鄂F12ABC", true},
		{"鄂F\t12345", "鄂F12345", true},
		{"鄂FD12345", "鄂FD12345", true},
		{"鄂F123456", "鄂F123456", true},
		{"鄂F·D1234-5", "鄂FD12345", true},
		{"鄂F1234学", "鄂F1234学", true},
		{"京A·1234警", "京A1234警", true},
		{"琼A12345", "琼A12345", true},
		{"藏A12345", "藏A12345", true},
		{"京O12345", "京O12345", true}, // O is allowed as the authority letter
		{"鄂F12I45", "鄂F12I45", false},
		{"鄂F12O45", "鄂F12O45", false},
		{"鄂F1234", "鄂F1234", false},
		{"鄂F12345678", "鄂F12345678", false},
		{"鄂F1234_5", "鄂F1234_5", false},
		{"鄂1F2345", "鄂1F2345", false},
		{"台A12345", "台A12345", false},
		{"使014578", "使014578", false},
		{"WJ鄂12345", "WJ鄂12345", false},
		{"", "", false},
		{"·", "·", false},
		{"\xff\xfe", "\xff\xfe", false},
		{"鄂F1234\xff", "鄂F1234\xff", false},
	}
	for _, tt := range tests {
		got, valid := NormalizePlate(tt.in)
		if got != tt.want || valid != tt.valid {
			t.Errorf("NormalizePlate(%q) = %q, %v; want %q, %v", tt.in, got, valid, tt.want, tt.valid)
		}
	}
}

func TestNormalizePlateAllocs(t *testing.T) {
	for in, want := range map[string]float64{"鄂F12345": 0, "鄂F·12345": 1, "unreadable": 0, "鄂F·1234": 0} {
		if n := testing.AllocsPerRun(100, func() { NormalizePlate(in) }); n != want {
			t.Errorf("NormalizePlate(%q): %v allocations, want %v", in, n, want)
		}
	}
}

func FuzzPlate(f *testing.F) {
	for _, s := range []string{"鄂F12345", "鄂F·12345", "鄂Ｆ１２３４５", "鄂f a1 2-34", "鄂FD12345", "鄂F123456", "鄂F1234学", "", "unknown", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		norm, valid := NormalizePlate(in)
		if !valid {
			if norm != in {
				t.Fatalf("invalid plate %q changed to %q", in, norm)
			}
			return
		}
		if n := utf8.RuneCountInString(norm); n != 7 && n != 8 {
			t.Fatalf("valid plate %q has %d characters", norm, n)
		}
		again, ok := NormalizePlate(norm)
		if !ok || again != norm {
			t.Fatalf("normal form %q of %q is not stable: %q %v", norm, in, again, ok)
		}
	})
}
