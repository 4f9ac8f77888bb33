package rules

import (
	"testing"
	"time"
)

func TestScheduleCovers(t *testing.T) {
	loc := time.FixedZone("CST", 8*3600)
	at := func(day, hh, mm int) time.Time { return time.Date(2026, 11, day, hh, mm, 0, 0, loc) } // 23rd is a Monday
	night := &ScheduleSpec{From: "22:00", To: "06:00"}
	weekdayNight := &ScheduleSpec{From: "22:00", To: "06:00", Days: []string{"mon", "tue", "wed", "thu", "fri"}}
	office := &ScheduleSpec{From: "09:00", To: "17:00"}
	allDay := &ScheduleSpec{From: "00:00", To: "00:00", Days: []string{"sun"}}
	tests := []struct {
		spec *ScheduleSpec
		at   time.Time
		want bool
	}{
		{night, at(23, 22, 0), true},
		{night, at(23, 21, 59), false},
		{night, at(24, 5, 59), true},
		{night, at(24, 6, 0), false},
		{office, at(23, 9, 0), true},
		{office, at(23, 17, 0), false},
		{weekdayNight, at(27, 23, 0), true},  // Friday night
		{weekdayNight, at(28, 2, 0), true},   // Saturday 02:00 belongs to Friday's night
		{weekdayNight, at(28, 23, 0), false}, // Saturday night
		{weekdayNight, at(23, 2, 0), false},  // Monday 02:00 belongs to Sunday's night
		{allDay, at(29, 12, 0), true},
		{allDay, at(30, 12, 0), false},
	}
	for _, tt := range tests {
		sc, err := tt.spec.compile()
		if err != nil {
			t.Fatal(err)
		}
		if got := sc.covers(tt.at); got != tt.want {
			t.Errorf("%s–%s %v at %s: %v, want %v", tt.spec.From, tt.spec.To, tt.spec.Days, tt.at.Format("Mon 15:04"), got, tt.want)
		}
	}
}

func TestInPolygon(t *testing.T) {
	square := [][2]float64{{32.0, 112.0}, {32.0, 112.01}, {32.01, 112.01}, {32.01, 112.0}}
	for _, tt := range []struct {
		lat, lon float64
		want     bool
	}{{32.005, 112.005, true}, {32.011, 112.005, false}, {32.005, 111.999, false}} {
		if got := inPolygon(square, tt.lat, tt.lon); got != tt.want {
			t.Errorf("inPolygon(%v, %v) = %v", tt.lat, tt.lon, got)
		}
	}
}
