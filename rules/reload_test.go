package rules

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// kafka-go's shared transport keeps idle connections for reuse
		// (the role's tests).
		goleak.IgnoreTopFunction("github.com/segmentio/kafka-go.(*connPool).discover"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreAnyFunction("github.com/segmentio/kafka-go.(*conn).run"),
	)
}

// TestReloader changes the rule file under a running Reloader: a valid
// change is applied, an invalid one is reported and the running rules
// stay, a fixed one is applied again.
func TestReloader(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("rules:\n  - {id: a, severity: low, match: {}}\n")

	var mu sync.Mutex
	var applied [][]string
	got := make(chan struct{}, 8)
	apply := func(rs *RuleSet) {
		mu.Lock()
		applied = append(applied, rs.Rules())
		mu.Unlock()
		got <- struct{}{}
	}
	r, err := NewReloader(ReloaderConfig{RulesPath: path, Interval: time.Hour}, testPseudonymizer(t), apply, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	wait := func() {
		t.Helper()
		select {
		case <-got:
		case <-time.After(5 * time.Second):
			t.Fatal("no rule set applied")
		}
	}
	waitErr := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for (r.LastError() != nil) != want {
			if time.Now().After(deadline) {
				t.Fatalf("LastError = %v", r.LastError())
			}
			time.Sleep(time.Millisecond)
		}
	}
	wait()

	write("rules:\n  - {id: a, severity: low, match: {}}\n  - {id: b, severity: low, match: {}}\n")
	r.Reload()
	wait()

	write("rules:\n  - {id: a, severity: low, match: {}, colour: red}\n")
	r.Reload()
	waitErr(true)

	write("rules:\n  - {id: c, severity: low, match: {}}\n")
	r.Reload()
	wait()
	waitErr(false)

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := [][]string{{"a"}, {"a", "b"}, {"c"}}
	if len(applied) != len(want) {
		t.Fatalf("applied %v, want %v", applied, want)
	}
	for i := range want {
		if len(applied[i]) != len(want[i]) || applied[i][0] != want[i][0] {
			t.Errorf("applied[%d] = %v, want %v", i, applied[i], want[i])
		}
	}
}

func TestReloaderFirstLoadFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hotlist.csv")
	if err := os.WriteFile(path, []byte("plate\nnot-a-plate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := NewReloader(ReloaderConfig{HotlistPath: path}, testPseudonymizer(t), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(t.Context()); err == nil {
		t.Fatal("Run started with a bad hotlist")
	}
}

func TestReloaderDefaults(t *testing.T) {
	r, err := NewReloader(ReloaderConfig{}, testPseudonymizer(t), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := r.Load()
	if err != nil {
		t.Fatal(err)
	}
	if rs.Lists().Hotlist.Len() == 0 || rs.Lists().Watchlist.Len() == 0 {
		t.Error("sample lists not loaded")
	}
}
