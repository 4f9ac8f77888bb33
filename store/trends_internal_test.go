package store

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestTrendSplit(t *testing.T) {
	day := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	d := day.Unix()
	at := func(h, m, s int) int64 { return d + int64(h*3600+m*60+s) }
	sp := func(src source, from, to int64) span { return span{src, secRange{from, to}} }
	for _, tc := range []struct {
		name     string
		from, to int64
		unit     int64
		minutes  bool
		want     []span
	}{
		{"whole hours", at(0, 0, 0), at(5, 0, 0), 3600, true, []span{sp(fromHours, at(0, 0, 0), at(5, 0, 0))}},
		{"minutes at both ends", at(0, 17, 0), at(5, 37, 0), 3600, true, []span{
			sp(fromMinutes, at(0, 17, 0), at(1, 0, 0)), sp(fromHours, at(1, 0, 0), at(5, 0, 0)), sp(fromMinutes, at(5, 0, 0), at(5, 37, 0))}},
		{"seconds, minutes and hours", at(0, 16, 30), at(5, 37, 1), 3600, true, []span{
			sp(fromRows, at(0, 16, 30), at(0, 17, 0)), sp(fromRows, at(5, 37, 0), at(5, 37, 1)),
			sp(fromMinutes, at(0, 17, 0), at(1, 0, 0)), sp(fromHours, at(1, 0, 0), at(5, 0, 0)), sp(fromMinutes, at(5, 0, 0), at(5, 37, 0))}},
		{"inside one hour", at(3, 10, 0), at(3, 40, 0), 3600, true, []span{sp(fromMinutes, at(3, 10, 0), at(3, 40, 0))}},
		{"inside one minute", at(3, 10, 5), at(3, 10, 50), 3600, true, []span{sp(fromRows, at(3, 10, 5), at(3, 10, 50))}},
		{"no minutely rollup", at(0, 17, 0), at(5, 37, 0), 3600, false, []span{
			sp(fromRows, at(0, 17, 0), at(1, 0, 0)), sp(fromHours, at(1, 0, 0), at(5, 0, 0)), sp(fromRows, at(5, 0, 0), at(5, 37, 0))}},
		{"half-hour zone", at(0, 17, 0), at(5, 37, 0), 60, true, []span{sp(fromMinutes, at(0, 17, 0), at(5, 37, 0))}},
		{"half-hour zone, no minutely rollup", at(0, 17, 0), at(5, 37, 0), 60, false, []span{sp(fromRows, at(0, 17, 0), at(5, 37, 0))}},
		{"odd zone", at(0, 17, 0), at(5, 37, 0), 0, true, []span{sp(fromRows, at(0, 17, 0), at(5, 37, 0))}},
		{"empty", at(2, 0, 0), at(2, 0, 0), 3600, true, nil},
	} {
		q := TrendQuery{From: time.Unix(tc.from, 0), To: time.Unix(tc.to, 0)}
		got := q.split(bucketer{unit: tc.unit}, tc.minutes)
		if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(span{}, secRange{})); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}
