package viid

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestFindMisspelt(t *testing.T) {
	tests := []struct {
		name   string
		record string
		want   []misspelling
	}{
		{"complete", `{"MotorVehicleID":"1","TollgateID":"kk-001","DeviceID":"d","PlateNo":"p","PlateColor":"5","PassTime":"t","LaneNo":1,"Speed":1,` +
			`"VehicleClass":"K33","VehicleColor":"J","PlateReliability":90,"HasPlate":"1","Speeed":2}`, nil},
		{"typo", `{"Speeed":"45.0"}`, []misspelling{{"Speeed", "Speed"}}},
		{"case and typo", `{"passtimme":"x"}`, []misspelling{{"passtimme", "PassTime"}}},
		{"swapped letters", `{"PsasTime":"x"}`, []misspelling{{"PsasTime", "PassTime"}}},
		{"escaped name", `{"Sp\u0065eed":1}`, []misspelling{{"Speeed", "Speed"}}},
		{"nested members are not the record's", `{"SubImageList":{"Speeed":1,"PassTimme":[{"LaneN0":1}]}}`, nil},
		{"GA/T 1400 neighbours are not typos", `{"DisappearTime":"x","PlateClass":"02","VehicleColorDepth":"1","PlateCharReliability":"9","SourceID":"s"}`, nil},
		{"a field read is not a typo of another", `{"PlateNo":"鄂F12345"}`, nil},
		{"too far", `{"Speedometer":1,"LaneCount":1}`, nil},
		{"short for a field", `{"Lane":1}`, []misspelling{{"Lane", "LaneNo"}}},
		{"at most four", `{"Speeed":1,"LaneN0":1,"PassTimme":1,"TolgateID":1,"DeviceIDD":1,"HasPlat":1}`, []misspelling{
			{"Speeed", "Speed"}, {"LaneN0", "LaneNo"}, {"PassTimme", "PassTime"}, {"TolgateID", "TollgateID"}}},
		{"not an object", `["Speeed"]`, nil},
		{"cut short", `{"Speeed":"4`, []misspelling{{"Speeed", "Speed"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			absent := uint32(1<<len(motorVehicleFields.names) - 1)
			if tt.name == "complete" {
				absent = 0
			}
			got := findMisspelt([]byte(tt.record), motorVehicleFields, absent, nil)
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(misspelling{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestFoldDistance(t *testing.T) {
	tests := []struct {
		a, b  string
		limit int
		want  int
	}{
		{"PassTime", "passtime", 2, 0},
		{"PassTimme", "PassTime", 2, 1},
		{"PsasTime", "PassTime", 2, 1},
		{"LaneN0", "LaneNo", 2, 1},
		{"PlateNo", "LaneNo", 2, 2},
		{"AppearTime", "DisappearTime", 2, 3},
		{"PlateClass", "PlateColor", 2, 3},
		{"x", "", 2, 1},
		{"", "", 0, 0},
	}
	for _, tt := range tests {
		if got := foldDistance([]byte(tt.a), tt.b, tt.limit); got != tt.want {
			t.Errorf("foldDistance(%q, %q, %d) = %d, want %d", tt.a, tt.b, tt.limit, got, tt.want)
		}
	}
}

// TestColorCodes: codes as checkpoint platforms send them, padded or not,
// and GA 24.8 body colour letters.
func TestColorCodes(t *testing.T) {
	plates := []struct{ in, want string }{
		{"2", "white"}, {"02", "white"}, {"05", "blue"}, {"5", "blue"}, {"006", "yellow"}, {"09", "green"}, {"01", "black"},
		{"03", ""}, {"99", ""}, {"0", ""}, {"蓝", "blue"}, {"Yellow", "yellow"},
	}
	for _, tt := range plates {
		if got, err := plateColor(text(tt.in)); got != tt.want || err != nil {
			t.Errorf("plateColor(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"14", "100", "x", "-1"} {
		if _, err := plateColor(text(bad)); err == nil {
			t.Errorf("plateColor(%q): no error", bad)
		}
	}
	vehicles := []struct{ in, want string }{
		{"2", "white"}, {"02", "white"}, {"J", "black"}, {"j", "black"}, {"A", "white"}, {"B", "gray"}, {"H", "blue"},
		{"Z", "other"}, {"AJ", "AJ"}, {"深蓝", "深蓝"}, {"K", "K"},
	}
	for _, tt := range vehicles {
		if got := colorName(tt.in); got != tt.want {
			t.Errorf("colorName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// BenchmarkFindMisspelt is the scan of BenchmarkMotorVehicle's record,
// which lacks HasPlate: the cost a record with an absent field pays.
func BenchmarkFindMisspelt(b *testing.B) {
	raw := []byte(`{"MotorVehicleID":"42060200001190000001022026112608153000001","TollgateID":"kk-001","DeviceID":"42060200001190000001","PlateNo":"鄂F12345","PlateColor":"5","PassTime":"20261126081530","LaneNo":"2","Speed":"63.5","VehicleClass":"K33","VehicleColor":"2","PlateReliability":"95"}`)
	var r motorVehicle
	if err := json.Unmarshal(raw, &r); err != nil {
		b.Fatal(err)
	}
	absent := r.absent()
	var dst []misspelling
	b.ReportAllocs()
	for b.Loop() {
		dst = findMisspelt(raw, motorVehicleFields, absent, dst[:0])
	}
}
