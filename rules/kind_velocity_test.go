package rules

import (
	"math"
	"testing"
)

func TestHaversine(t *testing.T) {
	for _, tt := range []struct {
		lat1, lon1, lat2, lon2, km float64
	}{
		{32, 112.1, 32.4, 112.2, 45.46},
		{32, 112.1, 32.019, 112.1, 2.113},
		{32, 112.1, 32, 112.1, 0},
		{32, 112.1, 45.8, 126.6, 1975.67},
	} {
		if got := haversineKm(tt.lat1, tt.lon1, tt.lat2, tt.lon2); math.Abs(got-tt.km) > 0.01 {
			t.Errorf("haversine(%v,%v → %v,%v) = %.3f km, want %.3f", tt.lat1, tt.lon1, tt.lat2, tt.lon2, got, tt.km)
		}
	}
}
