package rules

import (
	"strings"
	"testing"
)

func TestHotlistMatch(t *testing.T) {
	h, err := LoadHotlist(strings.NewReader("plate,severity,reason,tolerance,covert\n鄂F12345,high,a,1,false\n鄂FA8B52,critical,b,2,true\n鄂F5Z210,,c,,\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		read  string
		valid bool
		want  string
		diffs int
	}{
		{"鄂F12345", true, "鄂F12345", 0},
		{"鄂F1Z345", true, "鄂F12345", 1},
		{"鄂F1Z3S5", true, "", 0},
		{"鄂FI2345", false, "鄂F12345", 1},
		{"鄂FABB5Z", true, "鄂FA8B52", 2},
		{"鄂FQB852", true, "", 0}, // three differences
		{"鄂F5Z210", true, "鄂F5Z210", 0},
		{"鄂F52210", true, "", 0},
		{"鄂F5Z210", false, "", 0}, // an invalid read never matches by equality alone
		{"", false, "", 0},
	}
	for _, tt := range tests {
		en, diffs, ok := h.Match(tt.read, tt.valid)
		got := ""
		if ok {
			got = en.Plate
		}
		if got != tt.want || diffs != tt.diffs {
			t.Errorf("Match(%q, %v) = %q, %d; want %q, %d", tt.read, tt.valid, got, diffs, tt.want, tt.diffs)
		}
	}
	if n := testing.AllocsPerRun(100, func() { h.Match("鄂F1Z345", true) }); n != 0 {
		t.Errorf("Match allocates %v times", n)
	}
}

func TestListErrors(t *testing.T) {
	p := testPseudonymizer(t)
	tests := []struct {
		name, csv, want string
		watch           bool
	}{
		{"bad plate", "plate\nABC\n", "line 2: plate", false},
		{"bad tolerance", "plate,tolerance\n鄂F12345,3\n", "line 2: tolerance", false},
		{"bad covert", "plate,covert\n鄂F12345,maybe\n", "line 2: covert", false},
		{"bad severity", "plate,severity\n鄂F12345,urgent\n", "line 2: severity", false},
		{"duplicate", "plate\n鄂F12345\n鄂F12345\n", "line 3", false},
		{"unknown column", "plate,colour\n鄂F12345,red\n", "colour", false},
		{"no plate column", "severity\nhigh\n", "plate", false},
		{"empty", "", "header", false},
		{"bad check digit", "buyer_id,severity,reason\n420602198503121236,high,x\n", "line 2: buyer_id", true},
	}
	for _, tt := range tests {
		var err error
		if tt.watch {
			_, err = LoadWatchlist(strings.NewReader(tt.csv), p)
		} else {
			_, err = LoadHotlist(strings.NewReader(tt.csv))
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
		if tt.watch && err != nil && strings.Contains(err.Error(), "420602198503121236") {
			t.Errorf("%s: error %q shows the ID number", tt.name, err)
		}
	}
}

func TestWatchlistKeepsOnlyPseudonyms(t *testing.T) {
	p := testPseudonymizer(t)
	w, err := LoadWatchlist(strings.NewReader(string(DefaultWatchlist())), p)
	if err != nil {
		t.Fatal(err)
	}
	for k := range w.byPseudonym {
		if strings.Contains(k, "4206") || len(k) != 32 {
			t.Errorf("key %q is not a pseudonym", k)
		}
	}
	if _, ok := w.Match(p.Pseudonym("420683197805207898")); !ok {
		t.Error("listed person not matched by pseudonym")
	}
	if _, ok := w.Match("420683197805207898"); ok {
		t.Error("matched by raw ID number")
	}
	if _, err := LoadWatchlist(strings.NewReader("buyer_id\n"), nil); err == nil {
		t.Error("no error without a pseudonymizer")
	}
}
