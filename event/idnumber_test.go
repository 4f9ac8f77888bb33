package event

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidIDNumber(t *testing.T) {
	tests := []struct {
		in    string
		valid bool
		norm  string
	}{
		{"11010519491231002X", true, "11010519491231002X"},
		{"11010519491231002x", true, "11010519491231002X"},
		{validID("42060219900101123"), true, validID("42060219900101123")},
		{validID("44030419851231001"), true, validID("44030419851231001")},
		{"110105194912310021", false, "110105194912310021"},
		{"11010519491231002", false, "11010519491231002"},
		{"11010519491231002XX", false, "11010519491231002XX"},
		{"1101051949123100 X", false, "1101051949123100 X"},
		{"１１０１０５１９４９１２３１００２X", false, "１１０１０５１９４９１２３１００２X"},
		{"", false, ""},
	}
	for _, tt := range tests {
		if got := ValidIDNumber(tt.in); got != tt.valid {
			t.Errorf("ValidIDNumber(%q) = %v, want %v", tt.in, got, tt.valid)
		}
		norm, ok := NormalizeIDNumber(tt.in)
		if norm != tt.norm || ok != tt.valid {
			t.Errorf("NormalizeIDNumber(%q) = %q %v, want %q %v", tt.in, norm, ok, tt.norm, tt.valid)
		}
	}
	// Every check character, X included, is reachable and only the right one
	// is valid.
	for i := range 200 {
		first := "4206021990" + strings.Repeat("0", 7-len(itoa(i))) + itoa(i)
		id := validID(first)
		for _, c := range "0123456789X" {
			if got, want := ValidIDNumber(first+string(c)), first+string(c) == id; got != want {
				t.Fatalf("ValidIDNumber(%s%c) = %v, want %v", first, c, got, want)
			}
		}
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	s := ""
	for ; i > 0; i /= 10 {
		s = string(rune('0'+i%10)) + s
	}
	return s
}

func TestMaskIDNumber(t *testing.T) {
	tests := []struct{ in, want string }{
		{"42060219900101123X", "420602********123X"},
		{"11010519491231002x", "110105********002x"},
		{"110105194912310021", "110105********0021"},
		{"1101051949123100", "************3100"},
		{"1234567", "******7"},
		{"1234", "***4"},
		{"123", "***"},
		{"", ""},
		{"１２３４５６７８９", "*****６７８９"},
	}
	for _, tt := range tests {
		if got := MaskIDNumber(tt.in); got != tt.want {
			t.Errorf("MaskIDNumber(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestMaskName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"张三", "张*"},
		{"欧阳娜娜", "欧***"},
		{"张", "张*"},
		{"", "*"},
		{"买买提·艾力", "买*****"},
		{"Li Wei", "L*****"},
		{"\xff\xfe", "\ufffd*"},
	}
	for _, tt := range tests {
		if got := MaskName(tt.in); got != tt.want {
			t.Errorf("MaskName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzIDNumber(f *testing.F) {
	for _, s := range []string{"11010519491231002X", "11010519491231002x", "110105194912310021", "1101051949123100", "", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		valid := ValidIDNumber(in)
		norm, ok := NormalizeIDNumber(in)
		if ok != valid {
			t.Fatalf("NormalizeIDNumber(%q) ok %v, ValidIDNumber %v", in, ok, valid)
		}
		if ok && (!ValidIDNumber(norm) || strings.ToUpper(in) != norm) {
			t.Fatalf("NormalizeIDNumber(%q) = %q", in, norm)
		}
		if !ok && norm != in {
			t.Fatalf("NormalizeIDNumber(%q) changed an invalid number to %q", in, norm)
		}
		m := MaskIDNumber(in)
		if utf8.RuneCountInString(m) != utf8.RuneCountInString(in) {
			t.Fatalf("MaskIDNumber(%q) = %q: length changed", in, m)
		}
		if ValidIDNumber(m) {
			t.Fatalf("MaskIDNumber(%q) = %q: not masked", in, m)
		}
		n := utf8.RuneCountInString(in)
		keep := 0
		for _, r := range m {
			if r != '*' {
				keep++
			}
		}
		if n == 18 && keep > 10 || n != 18 && keep > 4 {
			t.Fatalf("MaskIDNumber(%q) = %q keeps %d characters", in, m, keep)
		}
		if n := MaskName(in); in != "" && utf8.RuneCountInString(n) < 2 || !strings.HasSuffix(n, "*") {
			t.Fatalf("MaskName(%q) = %q", in, n)
		}
	})
}

func TestIDCheckDigit(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want byte
	}{
		{"11010519491231002", 'X'},
		{"1101051949123100", 0},
		{"1101051949123100a", 0},
	} {
		if got := IDCheckDigit(tt.in); got != tt.want {
			t.Errorf("IDCheckDigit(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
