package simulators

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"citywatch/event"
	"citywatch/internal/city"
)

// FuelConfig sets the real-name fuel purchases.
type FuelConfig struct {
	// PurchasesPerHour is the daily mean of purchases per terminal.
	PurchasesPerHour float64 `yaml:"purchases_per_hour"`
	// BulkShare is the share of purchases in cans or drums.
	BulkShare float64 `yaml:"bulk_share"`
	// PermitShare is the share of bulk purchases with a permit; those
	// without one stay at 20 L or less in the background.
	PermitShare float64 `yaml:"permit_share"`
	// Buyers is the population of buyers at scale 1.
	Buyers int `yaml:"buyers"`
}

// SetDefaults fills zero fields.
func (c *FuelConfig) SetDefaults() {
	if c.PurchasesPerHour == 0 {
		c.PurchasesPerHour = 12
	}
	if c.BulkShare == 0 {
		c.BulkShare = 0.03
	}
	if c.PermitShare == 0 {
		c.PermitShare = 0.85
	}
	if c.Buyers == 0 {
		c.Buyers = 60000
	}
}

// Validate reports the first field out of range.
func (c FuelConfig) Validate() error {
	switch {
	case c.PurchasesPerHour < 0:
		return fmt.Errorf("fuel.purchases_per_hour: must not be negative")
	case c.BulkShare < 0 || c.BulkShare > 1:
		return fmt.Errorf("fuel.bulk_share: must be 0–1")
	case c.PermitShare < 0 || c.PermitShare > 1:
		return fmt.Errorf("fuel.permit_share: must be 0–1")
	case c.Buyers < 1:
		return fmt.Errorf("fuel.buyers: must be ≥ 1")
	}
	return nil
}

// Fuel simulates the real-name terminals of the fuel stations: purchases by
// residents with valid identity numbers, names and the plate of the
// vehicle they came with; a small share in bulk, most with a permit; a
// heartbeat each minute. In the background no buyer buys in bulk more
// than once a day, and bulk without a permit stays at 20 L or less.
type Fuel struct {
	cfg    FuelConfig
	terms  []*city.Device
	buyers []Person
	arr    *poisson
	hb     *ticker
	rng    *rand.Rand
	ids    ids
	e      event.Event
	// Purchases and Bulk count what was emitted.
	Purchases, Bulk uint64
}

// NewFuel returns the simulator of the terminals terms. Buyers drive
// vehicles of traffic when it is not nil. reserved holds identity numbers
// (watchlists, planted buyers) that the background never uses.
func NewFuel(cfg FuelConfig, terms []*city.Device, traffic *Traffic, buyers int, reserved map[string]bool, rate float64, seed uint64, start time.Time) *Fuel {
	rng := rand.New(rand.NewPCG(seed, 0xf0e1))
	f := &Fuel{cfg: cfg, terms: terms, rng: rng, ids: newIDs("fuel", seed)}
	seen := map[string]bool{}
	for len(f.buyers) < buyers {
		p := NewPerson(rng)
		if seen[p.ID] || reserved[p.ID] {
			continue
		}
		seen[p.ID] = true
		if traffic != nil && rng.Float64() < 0.8 {
			p.Plate = traffic.Fleet[rng.IntN(len(traffic.Fleet))].Plate
		}
		if rng.Float64() < 0.05 {
			p.Permit = fmt.Sprintf("襄公油%08d", rng.IntN(1e8))
		}
		f.buyers = append(f.buyers, p)
	}
	f.arr = newPoisson(float64(len(terms))*cfg.PurchasesPerHour*rate/3600, &rhythmFuel, rng, start)
	phases := make([]time.Duration, len(terms))
	for i, d := range terms {
		phases[i] = time.Duration(hash64(d.ID, seed) % uint64(time.Minute))
	}
	f.hb = newTicker(time.Minute, phases, start)
	return f
}

// Step emits every purchase and heartbeat after the previous Step and at or
// before now.
func (f *Fuel) Step(now time.Time, emit Emit) {
	if len(f.terms) == 0 {
		return
	}
	f.arr.until(now, func(t time.Time) { f.purchase(t, emit) })
	f.hb.until(now, func(i int, at time.Time) {
		d := f.terms[i]
		e := &f.e
		e.Reset()
		e.ID, e.Type, e.DeviceID, e.Time, e.Lat, e.Lon = f.ids.next(), event.TypeDeviceHeartbeat, d.ID, at, d.Lat, d.Lon
		emit(e)
	})
}

// The grades sold, by share of purchases.
var (
	vehicleFuels = []string{"92", "92", "92", "92", "92", "92", "95", "95", "95", "98", "diesel"}
	bulkFuels    = []string{"92", "diesel", "diesel"}
)

func (f *Fuel) purchase(t time.Time, emit Emit) {
	rng := f.rng
	d := f.terms[rng.IntN(len(f.terms))]
	b := &f.buyers[rng.IntN(len(f.buyers))]
	e := &f.e
	e.Reset()
	e.ID, e.Type, e.DeviceID, e.Time, e.Lat, e.Lon = f.ids.next(), event.TypeFuelPurchase, d.ID, t, d.Lat, d.Lon
	e.StationID = d.Station
	e.BuyerID, e.BuyerName, e.Plate = b.ID, b.Name, b.Plate
	e.Container = "vehicle"
	e.Fuel = vehicleFuels[rng.IntN(len(vehicleFuels))]
	e.VolumeL = math.Round((15+50*rng.Float64())*10) / 10
	if rng.Float64() < f.cfg.BulkShare && (b.lastBulk.IsZero() || t.Sub(b.lastBulk) > 25*time.Hour) {
		b.lastBulk = t
		e.Container = "bulk"
		e.Plate = ""
		e.Fuel = bulkFuels[rng.IntN(len(bulkFuels))]
		if rng.Float64() < f.cfg.PermitShare {
			if b.Permit == "" {
				b.Permit = fmt.Sprintf("襄公油%08d", rng.IntN(1e8))
			}
			e.PermitNo = b.Permit
			e.VolumeL = math.Round((10+60*rng.Float64())*10) / 10
		} else {
			e.VolumeL = math.Round((5+15*rng.Float64())*10) / 10
		}
		f.Bulk++
	}
	f.Purchases++
	emit(e)
}
