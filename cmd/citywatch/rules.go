package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"citywatch/rules"
)

// cmdRules runs `citywatch rules test FILE…`: the rule test files of
// rules.RunTestFiles, reporting to stdout.
func cmdRules(_ context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) == 0 || args[0] != "test" {
		return errors.New("usage: citywatch rules test FILE…")
	}
	if len(args) == 1 {
		return errors.New("rules test: name at least one test file")
	}
	if err := rules.RunTestFiles(args[1:], stdout); err != nil {
		return fmt.Errorf("test: %w", err)
	}
	return nil
}
