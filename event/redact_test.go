package event

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestRedactPersonal(t *testing.T) {
	const id = "11010519491231002X"
	tests := []struct {
		name, in, want string
	}{
		{"valid fuel",
			`{"type":"fuel.purchase","buyer_id":"` + id + `","buyer_name":"张三丰","volume_l":25}`,
			`{"type":"fuel.purchase","buyer_id":"110105********002X","buyer_name":"张**","volume_l":25}`},
		{"key case and spaces",
			`{"BUYER_ID" : "` + id + `", "Buyer_Name"	:	"欧阳娜娜"}`,
			`{"BUYER_ID" : "110105********002X", "Buyer_Name"	:	"欧***"}`},
		{"broken JSON",
			`{"buyer_id":"` + id + `",,"buyer_name":"张三" "x"`,
			`{"buyer_id":"110105********002X",,"buyer_name":"张*" "x"`},
		{"cut in the ID number",
			`{"buyer_id":"1101051949`,
			`{"buyer_id":"******1949"`},
		{"cut in the name",
			`{"buyer_id":"` + id + `","buyer_name":"欧阳`,
			`{"buyer_id":"110105********002X","buyer_name":"欧*"`},
		{"cut after the colon", `{"buyer_name":`, `{"buyer_name":`},
		{"cut in the key", `{"buyer_na`, `{"buyer_na`},
		{"wrong check digit", `{"buyer_id":"110105194912310021"}`, `{"buyer_id":"110105********0021"}`},
		{"short id", `{"buyer_id":"1101"}`, `{"buyer_id":"***1"}`},
		{"escaped name", `{"buyer_name":"\u5f20\u4e09"}`, `{"buyer_name":"张*"}`},
		{"escaped id", `{"buyer_id":"\u0031101051949123100\u0032X"}`, `{"buyer_id":"110105********002X"}`},
		{"quote in name", `{"buyer_name":"\"x\"y"}`, `{"buyer_name":"\"***"}`},
		{"invalid UTF-8 name", "{\"buyer_name\":\"\xff\xfe\"}", "{\"buyer_name\":\"\ufffd*\"}"},
		{"number id", `{"buyer_id":110105194912310021}`, `{"buyer_id":"110105********0021"}`},
		{"number id with fraction", `[-110105194912310021.5e3, 110105194912310021]`, `["-110105********0021.5e3", "110105********0021"]`},
		{"null name", `{"buyer_name":null}`, `{"buyer_name":null}`},
		{"id in unknown field", `{"note":"证件` + id + `号","n":110105194912310021}`, `{"note":"证件110105********002X号","n":"110105********0021"}`},
		{"lower-case x", `{"a":"11010519491231002x"}`, `{"a":"110105********002x"}`},
		{"id at both ends", id + " " + id, "110105********002X 110105********002X"},
		{"number with ID exponent", `[110105194912310021.5e110105194912310021]`, `["110105********0021.5e110105********0021"]`},
		{"plus between runs", ` 000000000000000000+000000000000000000`, ` 000000********0000+000000********0000`},
		{"longer digit run", `{"n":1234567890123456789,"m":12345678901234567}`, `{"n":1234567890123456789,"m":12345678901234567}`},
		{"run then letters", `abc110105194912310021def`, `abc110105********0021def`},
		{"id as key", `{"` + id + `":1}`, `{"110105********002X":1}`},
		{"buyer_id as a value", `{"k":"buyer_id","v":"x"}`, `{"k":"buyer_id","v":"x"}`},
		{"binary", "\x00\x01\xff\"buyer_id\":\"" + id, "\x00\x01\xff\"buyer_id\":\"110105********002X\""},
		{"empty", ``, ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			got := RedactPersonal(in)
			if string(got) != tt.want {
				t.Errorf("RedactPersonal(%s)\n= %s\nwant %s", tt.in, got, tt.want)
			}
			if string(in) != tt.in {
				t.Errorf("input changed to %s", in)
			}
			if json.Valid(in) && !json.Valid(got) {
				t.Errorf("valid JSON became invalid: %s", got)
			}
			if again := RedactPersonal(got); string(again) != string(got) {
				t.Errorf("second RedactPersonal changed %s to %s", got, again)
			}
		})
	}
}

func TestRedactPersonalUnchanged(t *testing.T) {
	for _, s := range []string{
		`{"type":"camera.detection","plate":"鄂F12345","count":3}`,
		`{"buyer_id":"110105********002X","buyer_name":"张*"}`,
		"not json at all \x00\xff",
	} {
		in := []byte(s)
		if got := RedactPersonal(in); &got[0] != &in[0] {
			t.Errorf("RedactPersonal(%s) copied", s)
		}
	}
}

// hasIDNumber reports whether b holds an 18-character ID-number-shaped run
// that is not part of a longer digit run.
func hasIDNumber(b []byte) bool {
	for i := 0; i < len(b); {
		if !isDigit(b[i]) {
			i++
			continue
		}
		j := i
		for j < len(b) && isDigit(b[j]) {
			j++
		}
		if j-i == 18 || j-i == 17 && j < len(b) && (b[j] == 'X' || b[j] == 'x') {
			return true
		}
		i = j
	}
	return false
}

func FuzzRedact(f *testing.F) {
	for _, typ := range typeNamesList() {
		f.Add(readValid(f, typ))
	}
	f.Add([]byte(`{"buyer_id":"11010519491231002X","buyer_name":"张三"`))
	f.Add([]byte(`{"BUYER_ID" : "1101051949`))
	f.Add([]byte(`{"n":110105194912310021,"s":"11010519491231002x"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := string(in)
		out := RedactPersonal(in)
		if string(in) != orig {
			t.Fatal("input changed")
		}
		if hasIDNumber(out) {
			t.Fatalf("RedactPersonal(%q) = %q holds an ID number", in, out)
		}
		if !hasIDNumber(in) && !strings.Contains(strings.ToLower(orig), "buyer_") && string(out) != orig {
			t.Fatalf("RedactPersonal(%q) = %q changed a payload with nothing to mask", in, out)
		}
		if again := RedactPersonal(out); hasIDNumber(again) {
			t.Fatalf("second pass holds an ID number: %q", again)
		}
	})
}
