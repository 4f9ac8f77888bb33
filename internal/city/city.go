// Package city is citywatch's model of the city: the county-level districts
// of Xiangyang (real outlines), the 39 rapid-response circles of the 1-3-5
// plan, the protected zones with their schedules, the fuel stations and the
// registry of field devices (cameras, checkpoints, fuel terminals, drones
// and patrol units) with their positions, districts and sites.
//
// One file describes the city. The simulators generate it from a seed
// (Generate) and drive their devices from it; the processor reads the same
// file: ingest asks DistrictOf for enrichment, the rule engine asks ZonesAt
// and Zone.Active for geofences and the Site of a device for grouped
// absence, the dispatcher asks CircleFor and reads the units' home circles.
// The default city, generated from DefaultSeed, is embedded in the binary
// (Default), so citywatch runs without any file present.
//
// A City is read-only once loaded and safe for concurrent use. Coordinates
// are WGS-84 decimal degrees everywhere; polygon rings are GeoJSON-ordered
// [lon, lat] pairs, while every other position is a pair of Lat and Lon
// fields, as in events.
package city

import (
	"fmt"
	"slices"
	"time"
)

// Version is the version of the city file format this package reads and
// writes.
const Version = 1

// Kind is the kind of a device in the registry.
type Kind string

// The kinds of field devices.
const (
	KindCamera       Kind = "camera"
	KindCheckpoint   Kind = "checkpoint"
	KindFuelTerminal Kind = "fuel_terminal"
	KindDrone        Kind = "drone"
	KindUnit         Kind = "unit"
)

// Kinds lists every device kind in a fixed order.
var Kinds = []Kind{KindCamera, KindCheckpoint, KindFuelTerminal, KindDrone, KindUnit}

// Device classes, by kind.
const (
	// ClassA is a public-security (Class-A) camera.
	ClassA = "A"
	// ClassB is a networked social (Class-B) camera.
	ClassB = "B"
	// ClassInterProvincial is a checkpoint on a road into the province.
	ClassInterProvincial = "inter_provincial"
	// ClassInterCounty is a checkpoint on a road between counties.
	ClassInterCounty = "inter_county"
	// ClassElectronic is an electronic checkpoint (卡口) on an urban arterial.
	ClassElectronic = "electronic"
	// ClassPlatform is a mobile police platform.
	ClassPlatform = "platform"
	// ClassCar is a patrol car.
	ClassCar = "car"
)

// Places a camera site watches; they shape its daily rhythm.
const (
	PlaceRoad        = "road"
	PlaceStreet      = "street"
	PlaceResidential = "residential"
	PlaceMarket      = "market"
	PlaceStation     = "station" // transport hub
	PlaceZone        = "zone"    // inside a protected zone
)

// Zone kinds.
const (
	ZoneSchool     = "school"
	ZoneDepot      = "depot"
	ZoneGovernment = "government"
)

// Circle kinds.
const (
	CircleKeySite   = "key_site"
	CircleUrbanCore = "urban_core"
	CircleCounty    = "county"
)

// City is the whole city model. Build one with Load, Parse, Default or
// Generate; the lookup methods need the index those build.
type City struct {
	Version   int        `json:"version"`
	Name      string     `json:"name"`
	Seed      uint64     `json:"seed"`
	Districts []District `json:"districts"`
	Circles   []Circle   `json:"circles"`
	Zones     []Zone     `json:"zones"`
	Stations  []Station  `json:"stations"`
	Devices   []Device   `json:"devices"`

	idx *index
}

// District is a county-level district with its real outline.
type District struct {
	Code string `json:"code"` // administrative division code, "420602"
	Name string `json:"name"` // "襄城区"
	// Lat, Lon is the seat of the district government.
	Lat float64 `json:"lat"`
	Lon float64 `json:"lon"`
	// Urban is set for the districts of the urban core (襄城, 樊城, 襄州).
	Urban bool `json:"urban,omitempty"`
	// Polygons is the outline as a GeoJSON MultiPolygon: polygons, each an
	// outer ring then holes, each ring a closed list of [lon, lat].
	Polygons [][][][2]float64 `json:"polygons"`
}

// Circle is a rapid-response circle of the 1-3-5 plan: police must reach
// any point of it within TierMinutes.
type Circle struct {
	ID          string  `json:"id"`
	Name        string  `json:"name"`
	Kind        string  `json:"kind"` // key_site, urban_core, county
	Lat         float64 `json:"lat"`
	Lon         float64 `json:"lon"`
	RadiusM     float64 `json:"radius_m"`
	TierMinutes int     `json:"tier_minutes"` // 1, 3 or 5
	District    string  `json:"district"`     // code of the district of the centre
	// Units are the ids of the patrol units based in the circle.
	Units []string `json:"units"`
}

// Zone is a protected zone: a polygon guarded on a schedule.
type Zone struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Kind     string `json:"kind"` // school, depot, government
	District string `json:"district"`
	// Ring is the outline, a closed list of [lon, lat].
	Ring      [][2]float64 `json:"ring"`
	Schedules []Schedule   `json:"schedules"`
}

// Schedule is when a zone is guarded: on each of Days, from From to To in
// the city's local time ("HH:MM"). A To not after From runs past midnight
// into the next day, and the day it starts on is the one in Days.
type Schedule struct {
	Days []string `json:"days"` // "mon" … "sun"
	From string   `json:"from"`
	To   string   `json:"to"`
}

// Station is a fuel station with its real-name terminals.
type Station struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Lat       float64  `json:"lat"`
	Lon       float64  `json:"lon"`
	District  string   `json:"district"`
	Terminals []string `json:"terminals"`
}

// Device is one field device of the registry.
type Device struct {
	ID   string `json:"id"`
	Kind Kind   `json:"kind"`
	// Class is A or B for cameras; inter_provincial, inter_county or
	// electronic for checkpoints; platform or car for patrol units.
	Class    string  `json:"class,omitempty"`
	Lat      float64 `json:"lat"`
	Lon      float64 `json:"lon"`
	District string  `json:"district"`
	// Site groups devices that fail together (a camera pole, a station, a
	// drone dock); device.offline raises one alert per silent site.
	Site string `json:"site"`
	// Place is what a camera watches (road, street, residential, market,
	// station, zone).
	Place string `json:"place,omitempty"`
	// Zone is the protected zone a camera stands in.
	Zone string `json:"zone,omitempty"`
	// Station is a fuel terminal's station.
	Station string `json:"station,omitempty"`
	// Circle is a patrol unit's home circle.
	Circle string `json:"circle,omitempty"`
	// SSRC is the RTP synchronisation source of a camera's metadata
	// stream as its platform assigned it (GB/T 28181 puts it in the
	// INVITE's SDP); zero means the gateway's default, a hash of the id.
	SSRC uint32 `json:"ssrc,omitempty"`
}

// Location is the city's local time zone, China Standard Time (UTC+8, no
// daylight saving), for zone schedules.
var Location = time.FixedZone("CST", 8*3600)

var dayNames = [7]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// Active reports whether z is guarded at t.
func (z *Zone) Active(t time.Time) bool {
	t = t.In(Location)
	mins := t.Hour()*60 + t.Minute()
	today := dayNames[t.Weekday()]
	yesterday := dayNames[(t.Weekday()+6)%7]
	for _, s := range z.Schedules {
		from, _ := parseClock(s.From)
		to, _ := parseClock(s.To)
		if from < to {
			if mins >= from && mins < to && slices.Contains(s.Days, today) {
				return true
			}
			continue
		}
		// Past midnight: the evening part belongs to today, the morning
		// part to the day before.
		if mins >= from && slices.Contains(s.Days, today) {
			return true
		}
		if mins < to && slices.Contains(s.Days, yesterday) {
			return true
		}
	}
	return false
}

// parseClock reads "HH:MM" (00:00–24:00) as minutes after midnight.
func parseClock(s string) (int, error) {
	var h, m int
	if len(s) != 5 || s[2] != ':' {
		return 0, fmt.Errorf("cannot parse clock time %q: want HH:MM", s)
	}
	for i, c := range []byte(s) {
		if i != 2 && (c < '0' || c > '9') {
			return 0, fmt.Errorf("cannot parse clock time %q: want HH:MM", s)
		}
	}
	h = int(s[0]-'0')*10 + int(s[1]-'0')
	m = int(s[3]-'0')*10 + int(s[4]-'0')
	if h > 24 || m > 59 || (h == 24 && m != 0) {
		return 0, fmt.Errorf("cannot parse clock time %q: out of range", s)
	}
	return h*60 + m, nil
}

// Validate reports the first inconsistency of c: a wrong version, a
// duplicate or empty id, a reference to an unknown district, station,
// circle, zone or unit, a bad tier, radius, schedule or position.
func (c *City) Validate() error {
	if c.Version != Version {
		return fmt.Errorf("version: want %d, got %d", Version, c.Version)
	}
	if len(c.Districts) == 0 {
		return fmt.Errorf("districts: none")
	}
	districts := map[string]bool{}
	for i, d := range c.Districts {
		if d.Code == "" || d.Name == "" || districts[d.Code] {
			return fmt.Errorf("districts[%d]: empty or duplicate code or name %q", i, d.Code)
		}
		districts[d.Code] = true
		if len(d.Polygons) == 0 {
			return fmt.Errorf("districts[%d] %s: no polygons", i, d.Code)
		}
		for _, p := range d.Polygons {
			for _, r := range p {
				if err := checkRing(r); err != nil {
					return fmt.Errorf("districts[%d] %s: %w", i, d.Code, err)
				}
			}
		}
	}
	ids := map[string]bool{}
	seen := func(what, id string) error {
		if id == "" {
			return fmt.Errorf("%s: empty id", what)
		}
		if ids[id] {
			return fmt.Errorf("%s: duplicate id %q", what, id)
		}
		ids[id] = true
		return nil
	}
	circles := map[string]*Circle{}
	for i := range c.Circles {
		ci := &c.Circles[i]
		if err := seen(fmt.Sprintf("circles[%d]", i), ci.ID); err != nil {
			return err
		}
		circles[ci.ID] = ci
		switch {
		case ci.TierMinutes != 1 && ci.TierMinutes != 3 && ci.TierMinutes != 5:
			return fmt.Errorf("circles[%d] %s: tier_minutes must be 1, 3 or 5, got %d", i, ci.ID, ci.TierMinutes)
		case ci.RadiusM <= 0:
			return fmt.Errorf("circles[%d] %s: radius_m must be positive", i, ci.ID)
		case !districts[ci.District]:
			return fmt.Errorf("circles[%d] %s: unknown district %q", i, ci.ID, ci.District)
		case !validPos(ci.Lat, ci.Lon):
			return fmt.Errorf("circles[%d] %s: bad position", i, ci.ID)
		}
	}
	for i, z := range c.Zones {
		if err := seen(fmt.Sprintf("zones[%d]", i), z.ID); err != nil {
			return err
		}
		if !districts[z.District] {
			return fmt.Errorf("zones[%d] %s: unknown district %q", i, z.ID, z.District)
		}
		if err := checkRing(z.Ring); err != nil {
			return fmt.Errorf("zones[%d] %s: %w", i, z.ID, err)
		}
		if len(z.Schedules) == 0 {
			return fmt.Errorf("zones[%d] %s: no schedules", i, z.ID)
		}
		for j, s := range z.Schedules {
			if _, err := parseClock(s.From); err != nil {
				return fmt.Errorf("zones[%d] %s: schedules[%d].from: %w", i, z.ID, j, err)
			}
			if _, err := parseClock(s.To); err != nil {
				return fmt.Errorf("zones[%d] %s: schedules[%d].to: %w", i, z.ID, j, err)
			}
			for _, d := range s.Days {
				if !slices.Contains(dayNames[:], d) {
					return fmt.Errorf("zones[%d] %s: schedules[%d]: unknown day %q", i, z.ID, j, d)
				}
			}
		}
	}
	stations := map[string]bool{}
	for i, s := range c.Stations {
		if err := seen(fmt.Sprintf("stations[%d]", i), s.ID); err != nil {
			return err
		}
		stations[s.ID] = true
		if !districts[s.District] {
			return fmt.Errorf("stations[%d] %s: unknown district %q", i, s.ID, s.District)
		}
	}
	units := map[string]string{}
	for i, d := range c.Devices {
		if err := seen(fmt.Sprintf("devices[%d]", i), d.ID); err != nil {
			return err
		}
		if !validPos(d.Lat, d.Lon) {
			return fmt.Errorf("devices[%d] %s: bad position", i, d.ID)
		}
		if !districts[d.District] {
			return fmt.Errorf("devices[%d] %s: unknown district %q", i, d.ID, d.District)
		}
		if d.Site == "" {
			return fmt.Errorf("devices[%d] %s: empty site", i, d.ID)
		}
		var okClass bool
		switch d.Kind {
		case KindCamera:
			okClass = d.Class == ClassA || d.Class == ClassB
		case KindCheckpoint:
			okClass = d.Class == ClassInterProvincial || d.Class == ClassInterCounty || d.Class == ClassElectronic
		case KindFuelTerminal:
			okClass = d.Class == ""
			if !stations[d.Station] {
				return fmt.Errorf("devices[%d] %s: unknown station %q", i, d.ID, d.Station)
			}
		case KindDrone:
			okClass = d.Class == ""
		case KindUnit:
			okClass = d.Class == ClassPlatform || d.Class == ClassCar
			if circles[d.Circle] == nil {
				return fmt.Errorf("devices[%d] %s: unknown home circle %q", i, d.ID, d.Circle)
			}
			units[d.ID] = d.Circle
		default:
			return fmt.Errorf("devices[%d] %s: unknown kind %q", i, d.ID, d.Kind)
		}
		if !okClass {
			return fmt.Errorf("devices[%d] %s: class %q does not fit kind %s", i, d.ID, d.Class, d.Kind)
		}
		if d.Zone != "" && !ids[d.Zone] {
			return fmt.Errorf("devices[%d] %s: unknown zone %q", i, d.ID, d.Zone)
		}
	}
	for _, ci := range c.Circles {
		for _, u := range ci.Units {
			if units[u] != ci.ID {
				return fmt.Errorf("circle %s: unit %q is not a unit based there", ci.ID, u)
			}
		}
	}
	return nil
}

func validPos(lat, lon float64) bool {
	return lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180
}

func checkRing(r [][2]float64) error {
	if len(r) < 4 {
		return fmt.Errorf("ring of %d points: want at least 4 (closed)", len(r))
	}
	if r[0] != r[len(r)-1] {
		return fmt.Errorf("ring not closed")
	}
	for _, p := range r {
		if !validPos(p[1], p[0]) {
			return fmt.Errorf("ring point %v out of range", p)
		}
	}
	return nil
}
