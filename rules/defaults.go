package rules

import (
	"bytes"
	_ "embed"
	"fmt"

	"citywatch/event"
)

//go:embed default.rules.yaml
var defaultRules []byte

//go:embed default_hotlist.csv
var defaultHotlist []byte

//go:embed default_watchlist.csv
var defaultWatchlist []byte

// DefaultRules returns the default rule pack (CONTRACT.md section 6) as a
// rule file: a copy the caller may keep.
func DefaultRules() []byte { return bytes.Clone(defaultRules) }

// DefaultHotlist returns the sample vehicle hotlist CSV.
func DefaultHotlist() []byte { return bytes.Clone(defaultHotlist) }

// DefaultWatchlist returns the sample person watchlist CSV. It holds ID
// numbers of no real person; LoadWatchlist keeps only their pseudonyms.
func DefaultWatchlist() []byte { return bytes.Clone(defaultWatchlist) }

// DefaultLists loads the sample hotlist and watchlist; p turns the
// watchlist's ID numbers into pseudonyms.
func DefaultLists(p *event.Pseudonymizer) (Lists, error) {
	h, err := LoadHotlist(bytes.NewReader(defaultHotlist))
	if err != nil {
		return Lists{}, fmt.Errorf("cannot load default lists: %w", err)
	}
	w, err := LoadWatchlist(bytes.NewReader(defaultWatchlist), p)
	if err != nil {
		return Lists{}, fmt.Errorf("cannot load default lists: %w", err)
	}
	return Lists{Hotlist: h, Watchlist: w}, nil
}

// DefaultRuleSet compiles the default rule pack with the sample lists.
func DefaultRuleSet(p *event.Pseudonymizer) (*RuleSet, error) {
	lists, err := DefaultLists(p)
	if err != nil {
		return nil, err
	}
	return Load(defaultRules, lists)
}
