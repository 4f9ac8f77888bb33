package rules

import (
	"bytes"
	"path/filepath"
	"testing"
)

// TestRuleFiles runs every rule test file under testdata, as
// `citywatch rules test` does.
func TestRuleFiles(t *testing.T) {
	paths, err := filepath.Glob("testdata/*.test.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no rule test files: %v", err)
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			var out bytes.Buffer
			if err := RunTestFiles([]string{p}, &out); err != nil {
				t.Errorf("%v\n%s", err, out.String())
			}
		})
	}
}
