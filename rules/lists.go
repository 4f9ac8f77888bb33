package rules

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"citywatch/event"
)

// Lists are the lists that match rules read, by the names a rule file
// uses: vehicle_hotlist and person_watchlist. A nil list matches nothing.
type Lists struct {
	Hotlist   *Hotlist
	Watchlist *Watchlist
}

// List names of a match rule's list field.
const (
	ListVehicleHotlist  = "vehicle_hotlist"
	ListPersonWatchlist = "person_watchlist"
)

// HotlistEntry is one wanted vehicle (CONTRACT.md section 6).
type HotlistEntry struct {
	Plate     string         // normal form
	Severity  event.Severity // "" means the rule's
	Reason    string
	Tolerance int  // look-alike characters that may differ, 0–2
	Covert    bool // hide the hit from patrol units
}

// Hotlist is a vehicle hotlist, immutable once loaded. A plate read
// matches an entry exactly, or when it differs from the entry only in
// OCR look-alike characters (0/D/Q, 8/B, 2/Z, 1/I, 5/S), in no more
// positions than the entry's tolerance. A read that is not a valid plate
// matches only through the tolerance, never by exact equality alone.
type Hotlist struct {
	entries []HotlistEntry
	exact   map[string]int32   // normal form → entry
	folded  map[string][]int32 // look-alike folded form → entries with tolerance > 0
}

// Len returns the number of entries.
func (h *Hotlist) Len() int {
	if h == nil {
		return 0
	}
	return len(h.entries)
}

// maxTolerance is the largest tolerance the contract allows.
const maxTolerance = 2

// LoadHotlist reads a hotlist CSV: a header row naming at least plate, and
// any of severity, reason, tolerance (default 0) and covert (default
// false). Errors name the line and column.
func LoadHotlist(r io.Reader) (*Hotlist, error) {
	rows, cols, err := readCSV(r, "plate", []string{"plate", "severity", "reason", "tolerance", "covert"})
	if err != nil {
		return nil, fmt.Errorf("cannot load hotlist: %w", err)
	}
	h := &Hotlist{exact: map[string]int32{}, folded: map[string][]int32{}}
	for _, row := range rows {
		plate, valid := event.NormalizePlate(strings.TrimSpace(row.get(cols, "plate")))
		if !valid {
			return nil, fmt.Errorf("cannot load hotlist: line %d: plate: not a valid plate", row.line)
		}
		en := HotlistEntry{Plate: plate, Reason: strings.TrimSpace(row.get(cols, "reason"))}
		if s := strings.TrimSpace(row.get(cols, "severity")); s != "" {
			en.Severity = event.Severity(strings.ToLower(s))
			if !en.Severity.Valid() {
				return nil, fmt.Errorf("cannot load hotlist: line %d: severity: must be critical, high, medium or low, got %q", row.line, s)
			}
		}
		if s := strings.TrimSpace(row.get(cols, "tolerance")); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 || n > maxTolerance {
				return nil, fmt.Errorf("cannot load hotlist: line %d: tolerance: must be 0–2, got %q", row.line, s)
			}
			en.Tolerance = n
		}
		if s := strings.TrimSpace(row.get(cols, "covert")); s != "" {
			b, err := strconv.ParseBool(s)
			if err != nil {
				return nil, fmt.Errorf("cannot load hotlist: line %d: covert: must be true or false, got %q", row.line, s)
			}
			en.Covert = b
		}
		if _, dup := h.exact[plate]; dup {
			return nil, fmt.Errorf("cannot load hotlist: line %d: plate: listed twice", row.line)
		}
		i := int32(len(h.entries))
		h.entries = append(h.entries, en)
		h.exact[plate] = i
		if en.Tolerance > 0 {
			var buf [64]byte
			f := string(foldLookalikes(buf[:0], plate))
			h.folded[f] = append(h.folded[f], i)
		}
	}
	return h, nil
}

// Match returns the entry a plate read matches and in how many look-alike
// characters the read differs from it (0 for an exact match). valid says
// whether the read is a valid plate in normal form. It does not allocate.
func (h *Hotlist) Match(plate string, valid bool) (entry *HotlistEntry, diffs int, ok bool) {
	if h == nil || plate == "" {
		return nil, 0, false
	}
	if valid {
		if i, ok := h.exact[plate]; ok {
			return &h.entries[i], 0, true
		}
	}
	if len(h.folded) == 0 || len(plate) > 48 {
		return nil, 0, false
	}
	var buf [64]byte
	f := foldLookalikes(buf[:0], plate)
	cands, found := h.folded[string(f)]
	if !found {
		return nil, 0, false
	}
	best, bestDiff := int32(-1), maxTolerance+1
	for _, i := range cands {
		d := runeDiffs(plate, h.entries[i].Plate)
		if d == 0 && !valid {
			continue // an invalid read never matches by equality alone
		}
		if d <= h.entries[i].Tolerance && d < bestDiff {
			best, bestDiff = i, d
		}
	}
	if best < 0 {
		return nil, 0, false
	}
	return &h.entries[best], bestDiff, true
}

// foldLookalikes appends s with every OCR look-alike character replaced by
// the first of its class.
func foldLookalikes(dst []byte, s string) []byte {
	for _, r := range s {
		switch r {
		case 'D', 'Q':
			r = '0'
		case 'B':
			r = '8'
		case 'Z':
			r = '2'
		case 'I':
			r = '1'
		case 'S':
			r = '5'
		}
		dst = utf8.AppendRune(dst, r)
	}
	return dst
}

// runeDiffs counts the positions in which a and b differ; they have the
// same folded form, so the same length in runes.
func runeDiffs(a, b string) int {
	n := 0
	for a != "" && b != "" {
		ra, sa := utf8.DecodeRuneInString(a)
		rb, sb := utf8.DecodeRuneInString(b)
		if ra != rb {
			n++
		}
		a, b = a[sa:], b[sb:]
	}
	return n
}

// WatchlistEntry is one person of the watchlist.
type WatchlistEntry struct {
	Severity event.Severity // "" means the rule's
	Reason   string
}

// Watchlist is a person watchlist held only as pseudonyms: the ID numbers
// of the file are turned into pseudonyms when it is read and not kept.
type Watchlist struct {
	byPseudonym map[string]WatchlistEntry
}

// Len returns the number of entries.
func (w *Watchlist) Len() int {
	if w == nil {
		return 0
	}
	return len(w.byPseudonym)
}

// Match returns the entry of a buyer pseudonym.
func (w *Watchlist) Match(pseudonym string) (WatchlistEntry, bool) {
	if w == nil || pseudonym == "" {
		return WatchlistEntry{}, false
	}
	en, ok := w.byPseudonym[pseudonym]
	return en, ok
}

// ErrNoPseudonymizer is returned by LoadWatchlist without a pseudonymizer.
var ErrNoPseudonymizer = errors.New("a pseudonymizer is needed (CITYWATCH_PSEUDONYM_KEY)")

// LoadWatchlist reads a watchlist CSV (header buyer_id,severity,reason) and
// keeps each person as p's pseudonym of their ID number. An ID number with
// a wrong check digit is an error that names the line but not the number.
func LoadWatchlist(r io.Reader, p *event.Pseudonymizer) (*Watchlist, error) {
	if p == nil {
		return nil, fmt.Errorf("cannot load watchlist: %w", ErrNoPseudonymizer)
	}
	rows, cols, err := readCSV(r, "buyer_id", []string{"buyer_id", "severity", "reason"})
	if err != nil {
		return nil, fmt.Errorf("cannot load watchlist: %w", err)
	}
	w := &Watchlist{byPseudonym: make(map[string]WatchlistEntry, len(rows))}
	for _, row := range rows {
		id, ok := event.NormalizeIDNumber(strings.TrimSpace(row.get(cols, "buyer_id")))
		if !ok {
			return nil, fmt.Errorf("cannot load watchlist: line %d: buyer_id: not a valid resident ID number", row.line)
		}
		en := WatchlistEntry{Reason: strings.TrimSpace(row.get(cols, "reason"))}
		if s := strings.TrimSpace(row.get(cols, "severity")); s != "" {
			en.Severity = event.Severity(strings.ToLower(s))
			if !en.Severity.Valid() {
				return nil, fmt.Errorf("cannot load watchlist: line %d: severity: must be critical, high, medium or low, got %q", row.line, s)
			}
		}
		w.byPseudonym[p.Pseudonym(id)] = en
	}
	return w, nil
}

type csvRow struct {
	line   int
	fields []string
}

func (r csvRow) get(cols map[string]int, name string) string {
	i, ok := cols[name]
	if !ok || i >= len(r.fields) {
		return ""
	}
	return r.fields[i]
}

// readCSV reads a CSV file with a header row; columns not in known are an
// error, required must be present. Blank lines and lines starting with #
// are skipped.
func readCSV(r io.Reader, required string, known []string) ([]csvRow, map[string]int, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, errors.New("empty file: a header row is needed")
		}
		return nil, nil, err
	}
	cols := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		ok := false
		for _, k := range known {
			if h == k {
				ok = true
			}
		}
		if !ok {
			return nil, nil, fmt.Errorf("line 1: unknown column %q (columns: %s)", h, strings.Join(known, ","))
		}
		cols[h] = i
	}
	if _, ok := cols[required]; !ok {
		return nil, nil, fmt.Errorf("line 1: column %q is required", required)
	}
	var rows []csvRow
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return rows, cols, nil
		}
		if err != nil {
			return nil, nil, err
		}
		line, _ := cr.FieldPos(0)
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		rows = append(rows, csvRow{line: line, fields: rec})
	}
}
