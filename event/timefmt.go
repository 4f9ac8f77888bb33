package event

import (
	"sync"
	"time"
)

// RFC 3339 times are parsed and written by hand: time.Parse allocates a
// *time.Location for every offset it meets that is not the local zone's,
// and the hot path must not allocate per event.

// fixedZones holds one shared *time.Location per 15-minute UTC offset from
// −23:45 to +23:45, built once; offset 0 is time.UTC.
var fixedZones = sync.OnceValue(func() *[191]*time.Location {
	var z [191]*time.Location
	for i := range z {
		off := (i - 95) * 15 * 60
		if off == 0 {
			z[i] = time.UTC
			continue
		}
		z[i] = time.FixedZone("", off)
	}
	return &z
})

// zoneFor returns a location with the given UTC offset in seconds.
func zoneFor(off int) *time.Location {
	if off%900 == 0 && off > -24*3600 && off < 24*3600 {
		return fixedZones()[off/900+95]
	}
	return time.FixedZone("", off) // rare: an offset not on a quarter hour
}

func digits2(s string, i int) (int, bool) {
	a, b := s[i]-'0', s[i+1]-'0'
	if a > 9 || b > 9 {
		return 0, false
	}
	return int(a)*10 + int(b), true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil returns the number of days from 1970-01-01 to the given
// proleptic Gregorian date (year ≥ 0).
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
}

// parseTime parses an RFC 3339 date-time with a required offset ("Z" or
// ±hh:mm) and 0–9 fractional digits. Lower-case "t" and "z" are accepted as
// RFC 3339 allows; leap seconds (":60") are not. "+00:00" and "-00:00" are
// read as UTC.
func parseTime(s string) (time.Time, bool) {
	// 2006-01-02T15:04:05Z is the shortest form.
	if len(s) < 20 || s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':' ||
		s[10] != 'T' && s[10] != 't' {
		return time.Time{}, false
	}
	y1, ok1 := digits2(s, 0)
	y2, ok2 := digits2(s, 2)
	mo, ok3 := digits2(s, 5)
	d, ok4 := digits2(s, 8)
	h, ok5 := digits2(s, 11)
	mi, ok6 := digits2(s, 14)
	sec, ok7 := digits2(s, 17)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7) {
		return time.Time{}, false
	}
	y := y1*100 + y2
	if mo < 1 || mo > 12 || d < 1 || d > daysIn(mo, y) || h > 23 || mi > 59 || sec > 59 {
		return time.Time{}, false
	}
	i := 19
	ns := 0
	if s[i] == '.' {
		i++
		n := 0
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			if n == 9 {
				return time.Time{}, false
			}
			ns = ns*10 + int(s[i]-'0')
			n++
			i++
		}
		if n == 0 {
			return time.Time{}, false
		}
		for ; n < 9; n++ {
			ns *= 10
		}
	}
	if i >= len(s) {
		return time.Time{}, false
	}
	off := 0
	switch s[i] {
	case 'Z', 'z':
		i++
	case '+', '-':
		if len(s)-i != 6 || s[i+3] != ':' {
			return time.Time{}, false
		}
		oh, okh := digits2(s, i+1)
		om, okm := digits2(s, i+4)
		if !okh || !okm || oh > 23 || om > 59 {
			return time.Time{}, false
		}
		off = oh*3600 + om*60
		if s[i] == '-' {
			off = -off
		}
		i += 6
	default:
		return time.Time{}, false
	}
	if i != len(s) {
		return time.Time{}, false
	}
	unix := daysFromCivil(y, mo, d)*86400 + int64(h*3600+mi*60+sec) - int64(off)
	return time.Unix(unix, int64(ns)).In(zoneFor(off)), true
}

// appendTime appends t in RFC 3339 with at least millisecond precision
// (more digits only when t has sub-millisecond precision, so that a decoded
// time re-encodes exactly) and t's own offset ("Z" for UTC).
func appendTime(dst []byte, t time.Time) []byte {
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	dst = appendInt4(dst, y)
	dst = append(dst, '-')
	dst = append2(dst, int(mo))
	dst = append(dst, '-')
	dst = append2(dst, d)
	dst = append(dst, 'T')
	dst = append2(dst, h)
	dst = append(dst, ':')
	dst = append2(dst, mi)
	dst = append(dst, ':')
	dst = append2(dst, s)
	dst = append(dst, '.')
	ns := t.Nanosecond()
	var frac [9]byte
	for i := 8; i >= 0; i-- {
		frac[i] = byte('0' + ns%10)
		ns /= 10
	}
	n := 9
	for n > 3 && frac[n-1] == '0' {
		n--
	}
	dst = append(dst, frac[:n]...)
	_, off := t.Zone()
	if off == 0 {
		return append(dst, 'Z')
	}
	sign := byte('+')
	if off < 0 {
		sign, off = '-', -off
	}
	off /= 60 // RFC 3339 offsets have no seconds
	dst = append(dst, sign)
	dst = append2(dst, off/60)
	dst = append(dst, ':')
	return append2(dst, off%60)
}

func append2(dst []byte, v int) []byte {
	return append(dst, byte('0'+v/10%10), byte('0'+v%10))
}

// appendInt4 appends a year as at least 4 digits.
func appendInt4(dst []byte, y int) []byte {
	if y < 0 || y > 9999 {
		// Not representable in RFC 3339; written anyway rather than lost.
		return appendIntDigits(dst, y)
	}
	return append(dst, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10))
}

func appendIntDigits(dst []byte, v int) []byte {
	if v < 0 {
		dst = append(dst, '-')
		v = -v
	}
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(dst, b[i:]...)
}
