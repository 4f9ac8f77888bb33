package memlimit

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// fakeCgroup writes a /proc/self/cgroup and the limit files under a
// temporary root; files maps a path below the root to its content.
func fakeCgroup(t *testing.T, self string, files map[string]string) (root, proc string) {
	t.Helper()
	dir := t.TempDir()
	root = filepath.Join(dir, "sys", "fs", "cgroup")
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	proc = filepath.Join(dir, "cgroup")
	if err := os.WriteFile(proc, []byte(self), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, proc
}

func TestContainerLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		self  string
		files map[string]string
		want  int64 // 0: none
	}{
		{"v2 in a container (namespaced: the root)", "0::/\n",
			map[string]string{"memory.max": "4294967296"}, 4 << 30},
		{"v2 without a limit", "0::/\n",
			map[string]string{"memory.max": "max"}, 0},
		{"v2 nested: the smallest up the path", "0::/kubepods/pod1/ctr\n",
			map[string]string{
				"kubepods/memory.max":          "max",
				"kubepods/pod1/memory.max":     "2147483648",
				"kubepods/pod1/ctr/memory.max": "max",
			}, 2 << 30},
		{"v1", "12:cpu,cpuacct:/\n4:memory:/docker/abc\n",
			map[string]string{"memory/docker/abc/memory.limit_in_bytes": "1073741824"}, 1 << 30},
		{"v1 unlimited", "4:memory:/\n",
			map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712"}, 0},
		{"no cgroup files", "0::/user.slice\n", nil, 0},
		{"unreadable content", "0::/\n",
			map[string]string{"memory.max": "lots"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, proc := fakeCgroup(t, tc.self, tc.files)
			got, ok := containerLimit(root, proc)
			if want := tc.want != 0; ok != want || got != tc.want && ok {
				t.Errorf("containerLimit = %d, %v; want %d, %v", got, ok, tc.want, want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want string // substring of the error; "" for none
	}{
		{Config{}, ""},
		{Config{MemoryLimit: "3GiB", GCPercent: "off"}, ""},
		{Config{MemoryLimit: "auto", GCPercent: "400"}, ""},
		{Config{MemoryLimit: "805306368", GCPercent: "100"}, ""},
		{Config{MemoryLimit: "3GB"}, "runtime.memory_limit"},
		{Config{MemoryLimit: "1MiB"}, "less than 64MiB"},
		{Config{MemoryLimit: "-1GiB"}, "runtime.memory_limit"},
		{Config{GCPercent: "5"}, "runtime.gc_percent"},
		{Config{GCPercent: "fast"}, "runtime.gc_percent"},
		{Config{MemoryLimit: "none", GCPercent: "off"}, "without bound"},
	} {
		c := tc.c
		c.SetDefaults()
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.c, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want one with %q", tc.c, err, tc.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "123": 123, "512MiB": 512 << 20, "3GiB": 3 << 30, "1TiB": 1 << 40, "64KiB": 64 << 10, "10B": 10,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GiB", "3 GB", "1.5GiB", "9999999TiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q): no error", in)
		}
	}
}

// TestApply changes the process's runtime settings and puts them back.
func TestApply(t *testing.T) {
	oldLimit, oldPct := debug.SetMemoryLimit(-1), debug.SetGCPercent(100)
	debug.SetGCPercent(oldPct)
	t.Cleanup(func() {
		debug.SetMemoryLimit(oldLimit)
		debug.SetGCPercent(oldPct)
	})
	limited, limitedProc := fakeCgroup(t, "0::/\n", map[string]string{"memory.max": "4294967296"})
	open, openProc := fakeCgroup(t, "0::/\n", map[string]string{"memory.max": "max"})
	meminfo := filepath.Join(t.TempDir(), "meminfo")
	if err := os.WriteFile(meminfo, []byte("MemTotal:       25165824 kB\nMemFree:        18874368 kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	noMeminfo := filepath.Join(t.TempDir(), "absent")
	machine := int64(float64(24<<30) * machineShare)
	noEnv := func(string) string { return "" }
	share := autoShare // a variable: the product is not a whole constant
	auto := int64(float64(4<<30) * share)
	for _, tc := range []struct {
		name       string
		c          Config
		env        map[string]string
		root, proc string
		meminfo    string
		want       Applied
		wantErr    string
	}{
		{"auto in a container", Config{}, nil, limited, limitedProc, meminfo,
			Applied{Limit: auto, LimitFrom: "container", GCPercent: DefaultGCPercent, GCFrom: "config"}, ""},
		{"auto outside: the machine's", Config{GCPercent: "100"}, nil, open, openProc, meminfo,
			Applied{Limit: machine, LimitFrom: "machine", GCPercent: 100, GCFrom: "config"}, ""},
		{"auto with nothing to read", Config{}, nil, open, openProc, noMeminfo,
			Applied{Limit: math.MaxInt64, LimitFrom: "none", GCPercent: DefaultGCPercent, GCFrom: "config"}, ""},
		{"none", Config{MemoryLimit: "none"}, nil, limited, limitedProc, meminfo,
			Applied{Limit: math.MaxInt64, LimitFrom: "none", GCPercent: DefaultGCPercent, GCFrom: "config"}, ""},
		{"a size and off", Config{MemoryLimit: "1GiB", GCPercent: "off"}, nil, open, openProc, meminfo,
			Applied{Limit: 1 << 30, LimitFrom: "config", GCPercent: -1, GCFrom: "config"}, ""},
		{"off in a container", Config{GCPercent: "off"}, nil, limited, limitedProc, meminfo,
			Applied{Limit: auto, LimitFrom: "container", GCPercent: -1, GCFrom: "config"}, ""},
		{"off without a limit", Config{GCPercent: "off"}, nil, open, openProc, noMeminfo,
			Applied{}, "no memory limit applies"},
		{"the environment wins", Config{MemoryLimit: "1GiB", GCPercent: "off"}, map[string]string{"GOMEMLIMIT": "2GiB", "GOGC": "50"}, limited, limitedProc, meminfo,
			Applied{Limit: 1 << 30, LimitFrom: "environment", GCPercent: 100, GCFrom: "environment"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// What the runtime would have applied from the environment.
			debug.SetMemoryLimit(1 << 30)
			debug.SetGCPercent(100)
			getenv := noEnv
			if tc.env != nil {
				getenv = func(k string) string { return tc.env[k] }
			}
			c := tc.c
			c.SetDefaults()
			got, err := Apply(c, getenv, tc.root, tc.proc, tc.meminfo)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Apply: error %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Apply = %+v, want %+v", got, tc.want)
			}
			if l := debug.SetMemoryLimit(-1); l != tc.want.Limit {
				t.Errorf("runtime memory limit %d, want %d", l, tc.want.Limit)
			}
			if p := debug.SetGCPercent(100); p != tc.want.GCPercent {
				t.Errorf("runtime GC percent %d, want %d", p, tc.want.GCPercent)
			}
		})
	}
}

func TestMachineMemory(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		content string
		want    int64 // 0: not ok
	}{
		{"MemTotal:       25165824 kB\nMemFree: 1 kB\n", 24 << 30},
		{"MemFree: 1 kB\nMemTotal: 1024 kB\n", 1 << 20},
		{"MemTotal: lots kB\n", 0},
		{"MemTotal: 1024 MB\n", 0},
		{"Nothing: 1 kB\n", 0},
	} {
		p := filepath.Join(dir, "meminfo")
		if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, ok := machineMemory(p)
		if ok != (tc.want != 0) || got != tc.want {
			t.Errorf("machineMemory(%q) = %d, %v; want %d", tc.content, got, ok, tc.want)
		}
	}
}
