package web

import (
	"math"
	"sync"
	"time"

	"citywatch/internal/city"
)

// CircleCoverage is how well one rapid-response circle is covered now.
type CircleCoverage struct {
	CircleID string `json:"circle_id"`
	// AvailableUnits is the number of available units with a fresh
	// position able to reach the centre within the circle's tier.
	AvailableUnits int `json:"available_units"`
	// BestETASeconds is the estimated travel time of the fastest available
	// unit to the centre; -1 when there is none.
	BestETASeconds float64 `json:"best_eta_s"`
	// Covered reports whether some unit can reach the centre within the
	// tier minutes.
	Covered bool `json:"covered"`
}

// CoverageSource tells the coverage of the circles at now. The dispatcher,
// which owns the ETA model, can be plugged in here; until then the web
// role estimates it from the units' positions (unitCoverage).
type CoverageSource interface {
	Coverage(now time.Time) []CircleCoverage
}

// The web role's own ETA estimate, used for ranking units in the alert
// detail and for unitCoverage: great-circle distance × roadFactor at
// urbanSpeed. It is a display estimate, not the dispatcher's model.
const (
	roadFactor = 1.3
	urbanSpeed = 40 / 3.6 // m/s
)

func etaSeconds(distM float64) float64 { return distM * roadFactor / urbanSpeed }

// unitCoverage estimates coverage from the live view's units.
type unitCoverage struct {
	city *city.City
	live *live
}

func (c unitCoverage) Coverage(now time.Time) []CircleCoverage {
	units := c.live.unitsSnapshot()
	out := make([]CircleCoverage, 0, len(c.city.Circles))
	for _, ci := range c.city.Circles {
		cc := CircleCoverage{CircleID: ci.ID, BestETASeconds: -1}
		limit := float64(ci.TierMinutes) * 60
		for i := range units {
			u := &units[i]
			if !available(u, now) {
				continue
			}
			eta := etaSeconds(city.DistanceM(u.Lat, u.Lon, ci.Lat, ci.Lon))
			if cc.BestETASeconds < 0 || eta < cc.BestETASeconds {
				cc.BestETASeconds = eta
			}
			if eta <= limit {
				cc.AvailableUnits++
			}
		}
		cc.Covered = cc.AvailableUnits > 0
		if cc.BestETASeconds >= 0 {
			cc.BestETASeconds = math.Round(cc.BestETASeconds)
		}
		out = append(out, cc)
	}
	return out
}

// available reports whether a unit can take a dispatch: a fresh position
// reported as available and no dispatch in progress.
func available(u *unitState, now time.Time) bool {
	if u.Time.IsZero() || now.Sub(u.Time) > staleAfter || u.Status != "available" {
		return false
	}
	return u.Dispatch == nil || dispatchDone(string(u.Dispatch.Status))
}

// dispatchDone reports whether a dispatch in status st no longer binds
// its unit.
func dispatchDone(st string) bool {
	switch st {
	case "cleared", "declined", "reassigned":
		return true
	}
	return false
}

// densityCell is one cell of the camera density layer.
type densityCell struct {
	Lat   float64 `json:"lat"` // south-west corner
	Lon   float64 `json:"lon"`
	Count int     `json:"count"`
}

// densityCache computes the camera grid once per cell size; the registry
// does not change while the process runs.
type densityCache struct {
	mu    sync.Mutex
	cells map[float64][]densityCell
}

// densityCellDeg are the cell sizes the API offers, in degrees.
var densityCellDeg = []float64{0.005, 0.01, 0.02, 0.05}

func (d *densityCache) get(c *city.City, cell float64) []densityCell {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cs, ok := d.cells[cell]; ok {
		return cs
	}
	type key struct{ x, y int }
	counts := map[key]int{}
	for _, dev := range c.DevicesOf(city.KindCamera) {
		counts[key{int(math.Floor(dev.Lon / cell)), int(math.Floor(dev.Lat / cell))}]++
	}
	out := make([]densityCell, 0, len(counts))
	for k, n := range counts {
		out = append(out, densityCell{Lat: round6(float64(k.y) * cell), Lon: round6(float64(k.x) * cell), Count: n})
	}
	if d.cells == nil {
		d.cells = map[float64][]densityCell{}
	}
	d.cells[cell] = out
	return out
}

func round6(x float64) float64 { return math.Round(x*1e6) / 1e6 }
