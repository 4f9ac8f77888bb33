package rules

import "citywatch/internal/city"

// CityConfig returns c's lookups for the engine: the protected zones at a
// point (geofence rules), the site of a device (grouped absence alerts;
// a registered device without a site stands alone; devices the registry
// does not know fall back to a grid cell), and the
// district and rapid-response circle of an alert.
func CityConfig(c *city.City) Config {
	return Config{
		Zones: func(dst []Zone, lat, lon float64) []Zone {
			for _, z := range c.ZonesAt(lat, lon) {
				dst = append(dst, Zone{ID: z.ID, Name: z.Name, Kind: z.Kind, Active: z.Active})
			}
			return dst
		},
		Site: func(id string, lat, lon float64) string {
			if d := c.Device(id); d != nil {
				return d.Site
			}
			return GridSite(id, lat, lon)
		},
		Locate: func(lat, lon float64) (string, string, int) {
			var district, circle string
			if d := c.DistrictOf(lat, lon); d != nil {
				district = d.Name
			}
			ci, tier := c.CircleFor(lat, lon)
			if ci != nil {
				circle = ci.ID
			}
			return district, circle, tier
		},
	}
}
