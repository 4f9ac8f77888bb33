// Package memlimit applies a citywatch process's memory policy to the Go
// runtime: a soft memory limit, by default nine tenths of the memory
// limit of the container (cgroup) the process runs in, or three quarters
// of the machine's memory outside one, and the collector's pace (GOGC),
// by default 400.
//
// Without a soft limit, a process in a container near its memory limit is
// killed by the kernel before the collector works any harder; with one,
// the collector works harder near the limit instead. The pace sets how
// often the collector runs below the limit. On two cores every cycle's
// marking slows the alerting path for tens of milliseconds, and at Go's
// default pace (100) those cycles made most of the tail of the alert
// latency (BENCHMARKS.md); at 400 the heap grows to five times the live
// data instead of two before a cycle, and cycles come a quarter as often.
//
// GOMEMLIMIT and GOGC in the environment win, as the Go runtime applies
// them itself.
package memlimit

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
)

// Config is the runtime section of the configuration.
type Config struct {
	// MemoryLimit is the soft memory limit of the process: "auto"
	// (default) for nine tenths of the container's memory limit, or
	// three quarters of the machine's memory outside a limited
	// container; "none"; or a size such as "3GiB", "512MiB" or a number
	// of bytes.
	MemoryLimit string `yaml:"memory_limit"`
	// GCPercent is the collector's pace, as GOGC: the heap grows by this
	// percentage of the live heap between cycles. "off" collects only
	// near the memory limit, which must then be set. Default 400.
	GCPercent string `yaml:"gc_percent"`
}

// SetDefaults fills what is unset.
func (c *Config) SetDefaults() {
	if c.MemoryLimit == "" {
		c.MemoryLimit = "auto"
	}
	if c.GCPercent == "" {
		c.GCPercent = strconv.Itoa(DefaultGCPercent)
	}
}

// Validate names the offending field.
func (c Config) Validate() error {
	if _, err := parseLimit(c.MemoryLimit); err != nil {
		return fmt.Errorf("runtime.memory_limit: %w", err)
	}
	if _, err := parsePercent(c.GCPercent); err != nil {
		return fmt.Errorf("runtime.gc_percent: %w", err)
	}
	if c.GCPercent == "off" && c.MemoryLimit == "none" {
		return errors.New("runtime.gc_percent: off needs a memory limit (runtime.memory_limit), or the heap grows without bound")
	}
	return nil
}

// DefaultGCPercent is the collector's pace unless configured.
const DefaultGCPercent = 400

// autoShare is the part of the container's limit that auto takes: the
// rest is for what the runtime does not count (the binary, the kernel's
// buffers for the process's sockets).
const autoShare = 0.9

// machineShare is the part of the machine's memory that auto takes
// outside a limited container: the rest is for the other processes of
// the machine (ClickHouse, the page cache).
const machineShare = 0.75

// Applied is the policy in force after Apply, for the start log.
type Applied struct {
	Limit     int64  // bytes; math.MaxInt64 for none
	LimitFrom string // "config", "container", "machine", "environment" or "none"
	GCPercent int    // -1 for off
	GCFrom    string // "config" or "environment"
}

// Apply sets the runtime's memory limit and pace from c, except what
// GOMEMLIMIT and GOGC in the environment (getenv) set, and reports what
// is in force. cgroupRoot is where the cgroup file system is mounted
// (/sys/fs/cgroup), proc where /proc/self/cgroup is (/proc/self/cgroup),
// meminfo where /proc/meminfo is.
func Apply(c Config, getenv func(string) string, cgroupRoot, proc, meminfo string) (Applied, error) {
	var a Applied
	if err := c.Validate(); err != nil {
		return a, err
	}
	limit, _ := parseLimit(c.MemoryLimit) // checked by Validate
	pct, _ := parsePercent(c.GCPercent)
	switch {
	case getenv("GOMEMLIMIT") != "":
		a.Limit, a.LimitFrom = debug.SetMemoryLimit(-1), "environment"
	case limit == limitNone:
		a.Limit, a.LimitFrom = math.MaxInt64, "none"
	case limit != limitAuto:
		a.Limit, a.LimitFrom = limit, "config"
	default:
		if n, ok := containerLimit(cgroupRoot, proc); ok {
			a.Limit, a.LimitFrom = int64(float64(n)*autoShare), "container"
		} else if n, ok := machineMemory(meminfo); ok {
			a.Limit, a.LimitFrom = int64(float64(n)*machineShare), "machine"
		} else {
			a.Limit, a.LimitFrom = math.MaxInt64, "none"
		}
	}
	if a.LimitFrom != "environment" {
		debug.SetMemoryLimit(a.Limit)
	}
	if getenv("GOGC") != "" {
		// SetGCPercent returns the previous value; set it back at once.
		a.GCPercent, a.GCFrom = debug.SetGCPercent(100), "environment"
		debug.SetGCPercent(a.GCPercent)
		return a, nil
	}
	if pct < 0 && a.Limit == math.MaxInt64 {
		return a, errors.New("runtime.gc_percent: off, but no memory limit applies (runtime.memory_limit auto found neither a container limit nor the machine's memory); set runtime.memory_limit to a size")
	}
	a.GCPercent, a.GCFrom = pct, "config"
	debug.SetGCPercent(pct)
	return a, nil
}

const (
	limitAuto = -1
	limitNone = -2
)

// parseLimit parses a memory_limit: limitAuto, limitNone or bytes.
func parseLimit(s string) (int64, error) {
	switch s {
	case "", "auto":
		return limitAuto, nil
	case "none":
		return limitNone, nil
	}
	n, err := ParseSize(s)
	if err != nil {
		return 0, err
	}
	if n < 64<<20 {
		return 0, fmt.Errorf("%q is less than 64MiB", s)
	}
	return n, nil
}

// parsePercent parses a gc_percent: -1 for off.
func parsePercent(s string) (int, error) {
	if s == "off" {
		return -1, nil
	}
	if s == "" {
		return DefaultGCPercent, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 10 || n > 10_000 {
		return 0, fmt.Errorf("%q is not off or a percentage from 10 to 10000", s)
	}
	return n, nil
}

var units = []struct {
	suffix string
	mult   int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1},
}

// ParseSize parses a size in bytes with an optional binary suffix (B,
// KiB, MiB, GiB, TiB), as GOMEMLIMIT takes it.
func ParseSize(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not auto, none or a size such as 3GiB, 512MiB or a number of bytes", s)
	}
	return n * mult, nil
}

// containerLimit returns the memory limit of the cgroup the process runs
// in, the smallest along its path up to the root: cgroup v2
// (memory.max) or v1 (memory.limit_in_bytes). ok is false when no limit
// is set or none can be read.
func containerLimit(root, proc string) (int64, bool) {
	v2, v1, err := cgroupPaths(proc)
	if err != nil {
		return 0, false
	}
	best := int64(math.MaxInt64)
	try := func(dir, file string) {
		for {
			if n, ok := readLimit(filepath.Join(dir, file)); ok && n < best {
				best = n
			}
			parent := filepath.Dir(dir)
			if parent == dir || !strings.HasPrefix(parent, root) {
				return
			}
			dir = parent
		}
	}
	if v2 != "" {
		try(filepath.Join(root, v2), "memory.max")
	}
	if v1 != "" {
		try(filepath.Join(root, "memory", v1), "memory.limit_in_bytes")
	}
	// v1's "no limit" is a page-rounded MaxInt64; anything above a
	// petabyte is none.
	if best >= 1<<50 {
		return 0, false
	}
	return best, true
}

// cgroupPaths reads the process's cgroup v2 path (the "0::" line) and its
// v1 memory controller path from proc (/proc/self/cgroup).
func cgroupPaths(proc string) (v2, v1 string, err error) {
	f, err := os.Open(proc)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = parts[2]
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			v1 = parts[2]
		}
	}
	return v2, v1, sc.Err()
}

// readLimit reads a cgroup memory limit file: a number of bytes, or "max".
func readLimit(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n > 0
}

// machineMemory reads MemTotal from meminfo (/proc/meminfo), in bytes.
func machineMemory(meminfo string) (int64, bool) {
	b, err := os.ReadFile(meminfo)
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, false
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n <= 0 || n > math.MaxInt64>>10 {
			return 0, false
		}
		return n << 10, true
	}
	return 0, false
}
