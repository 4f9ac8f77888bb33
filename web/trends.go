package web

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"citywatch/rules"
	"citywatch/store"
)

// table is a trend as rows of cells (string, float64 or uint64), the form
// the pages chart and the exports write.
type table struct {
	Title   string   `json:"title"`
	Columns []string `json:"columns"`
	Rows    [][]any  `json:"rows"`
}

// trendRange is the longest range one trend query may cover.
const trendRange = 400 * 24 * time.Hour

func (s *Server) trendQuery(r *http.Request) (store.TrendQuery, error) {
	q := r.URL.Query()
	tq := store.TrendQuery{Location: s.loc, Bucket: q.Get("bucket"), By: q.Get("by"), Districts: userOf(r).Districts}
	if tq.Bucket == "" {
		tq.Bucket = "hour"
	}
	if tq.Bucket != "hour" && tq.Bucket != "day" {
		return tq, errors.New("bucket: hour or day")
	}
	// The default ranges end at the next whole hour, so that they read
	// only the hourly rollups (a part-hour is read from the base tables).
	now := s.now().Truncate(time.Hour).Add(time.Hour)
	tq.To = now
	tq.From = now.Add(-24 * time.Hour)
	if tq.Bucket == "day" {
		tq.From = now.Add(-30 * 24 * time.Hour)
	}
	var err error
	if v := q.Get("from"); v != "" {
		if tq.From, err = time.Parse(time.RFC3339, v); err != nil {
			return tq, fmt.Errorf("from: %w", err)
		}
	}
	if v := q.Get("to"); v != "" {
		if tq.To, err = time.Parse(time.RFC3339, v); err != nil {
			return tq, fmt.Errorf("to: %w", err)
		}
	}
	if !tq.From.Before(tq.To) || tq.To.Sub(tq.From) > trendRange {
		return tq, errors.New("from, to: from must be before to, at most 400 days apart")
	}
	// Trends count whole minutes: a part-minute at either end would be
	// read from the base tables, whose order by the hour makes it cost a
	// whole hour of rows (see store.TrendQuery).
	tq.From = tq.From.Truncate(time.Minute)
	if t := tq.To.Truncate(time.Minute); !t.Equal(tq.To) {
		tq.To = t.Add(time.Minute)
	}
	return tq, nil
}

// trend answers one of the analysts' tables as JSON, or as CSV or Excel
// with format=csv or format=xlsx.
func (s *Server) trend(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.db == nil {
			s.error(w, r, http.StatusServiceUnavailable, errNoStore)
			return
		}
		tq, err := s.trendQuery(r)
		if err != nil {
			s.error(w, r, http.StatusBadRequest, err)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		t, err := s.trendTable(ctx, kind, tq)
		switch {
		case errors.Is(err, store.ErrTrend):
			s.error(w, r, http.StatusBadRequest, err)
			return
		case err != nil:
			s.error(w, r, http.StatusServiceUnavailable, err)
			return
		}
		switch r.URL.Query().Get("format") {
		case "", "json":
			s.writeJSON(w, http.StatusOK, t)
		case "csv":
			w.Header().Set("Content-Type", "text/csv; charset=utf-8")
			w.Header().Set("Content-Disposition", `attachment; filename="citywatch-`+kind+`.csv"`)
			writeCSV(w, t)
		case "xlsx":
			var buf bytes.Buffer
			if err := writeXLSX(&buf, t); err != nil {
				s.error(w, r, http.StatusInternalServerError, err)
				return
			}
			w.Header().Set("Content-Type", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
			w.Header().Set("Content-Disposition", `attachment; filename="citywatch-`+kind+`.xlsx"`)
			w.Write(buf.Bytes())
		default:
			s.error(w, r, http.StatusBadRequest, errors.New("format: json, csv or xlsx"))
		}
	}
}

func (s *Server) trendTable(ctx context.Context, kind string, tq store.TrendQuery) (table, error) {
	local := func(t time.Time) string { return t.In(s.loc).Format("2006-01-02T15:04:05-07:00") }
	counts := func(title, key string, cs []store.BucketCount) table {
		t := table{Title: title, Columns: []string{"bucket", key, "count"}, Rows: [][]any{}}
		for _, c := range cs {
			t.Rows = append(t.Rows, []any{local(c.Bucket), c.Key, c.Count})
		}
		return t
	}
	switch kind {
	case "alerts":
		cs, err := s.db.AlertsTrend(ctx, tq)
		if err != nil {
			return table{}, err
		}
		by := tq.By
		if by == "" {
			by = "rule"
		}
		return counts("alerts per "+tq.Bucket+" by "+by, by, cs), nil
	case "events":
		cs, err := s.db.EventsTrend(ctx, tq)
		if err != nil {
			return table{}, err
		}
		return counts("events per "+tq.Bucket+" by source", "type", cs), nil
	case "health":
		cs, err := s.db.HealthTrend(ctx, tq)
		if err != nil {
			return table{}, err
		}
		return counts("device health per "+tq.Bucket, "status", cs), nil
	case "response":
		rs, err := s.db.ResponseTimes(ctx, tq)
		if err != nil {
			return table{}, err
		}
		by := tq.By
		if by == "" {
			by = "tier"
		}
		t := table{Title: "response time, sensor to scene, by " + by, Columns: []string{by, "alerts", "p50_s", "p90_s", "within_1min", "within_3min", "within_5min"}, Rows: [][]any{}}
		for _, r := range rs {
			t.Rows = append(t.Rows, []any{r.Key, r.N, round1(r.P50), round1(r.P90), round3(r.Within1), round3(r.Within3), round3(r.Within5)})
		}
		return t, nil
	case "outcomes":
		rs, err := s.db.OutcomeRates(ctx, tq)
		if err != nil {
			return table{}, err
		}
		t := table{Title: "operators' outcomes by rule", Columns: []string{"rule", "closed", "confirmed", "false_alarm", "duplicate", "false_alarm_rate"}, Rows: [][]any{}}
		for _, r := range rs {
			t.Rows = append(t.Rows, []any{r.Rule, r.Closed, r.Confirmed, r.FalseAlarm, r.Duplicates, round3(r.FalseAlarmRate)})
		}
		return t, nil
	}
	return table{}, fmt.Errorf("trend %q: %w", kind, store.ErrTrend)
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// writeCSV writes t with a UTF-8 byte-order mark, which spreadsheet
// programs need to read Chinese text right.
func writeCSV(w io.Writer, t table) {
	w.Write([]byte("\xef\xbb\xbf"))
	cw := csv.NewWriter(w)
	cw.Write(t.Columns)
	for _, row := range t.Rows {
		rec := make([]string, len(row))
		for i, c := range row {
			rec[i] = fmt.Sprint(c)
		}
		cw.Write(rec)
	}
	cw.Flush()
}

// maxHotlistBytes bounds an uploaded hotlist.
const maxHotlistBytes = 5 << 20

// uploadHotlist takes a vehicle hotlist CSV (the request body), checks it
// with the rules role's loader, and replaces the configured hotlist file
// (write to a temporary file, then rename), which the rules role reloads.
func (s *Server) uploadHotlist(w http.ResponseWriter, r *http.Request) {
	u := userOf(r)
	if s.hotlistPath == "" {
		s.error(w, r, http.StatusConflict, errors.New("no hotlist file is configured (CITYWATCH_HOTLIST): the built-in sample cannot be replaced"))
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxHotlistBytes))
	if err != nil {
		s.error(w, r, http.StatusRequestEntityTooLarge, fmt.Errorf("cannot read the hotlist: %w", err))
		return
	}
	h, err := rules.LoadHotlist(bytes.NewReader(data))
	if err != nil {
		s.error(w, r, http.StatusBadRequest, err)
		return
	}
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	if err := s.audit(r.Context(), u.Name, "hotlist.upload", filepath.Base(s.hotlistPath), map[string]any{"entries": h.Len(), "sha256": digest, "bytes": len(data)}); err != nil {
		s.error(w, r, http.StatusServiceUnavailable, err)
		return
	}
	s.hotlistMu.Lock()
	err = replaceFile(s.hotlistPath, data)
	s.hotlistMu.Unlock()
	if err != nil {
		s.error(w, r, http.StatusInternalServerError, err)
		return
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"entries": h.Len(), "sha256": digest})
}

// replaceFile writes data to path atomically: a reader sees the old file
// or the new one, never a part.
func replaceFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".hotlist-*.csv")
	if err != nil {
		return fmt.Errorf("cannot write hotlist: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("cannot write hotlist: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("cannot write hotlist: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cannot write hotlist: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("cannot write hotlist: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cannot write hotlist: %w", err)
	}
	return nil
}
