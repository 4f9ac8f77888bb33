package simulators

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"citywatch/event"
	"citywatch/internal/city"
)

// Emit receives one simulated event. The event and everything it points to
// belong to the caller of Step and are reused after Emit returns.
type Emit func(e *event.Event)

// TopicOf returns the short topic name (CONTRACT.md section 1) that a
// device sends events of type t on.
func TopicOf(t event.Type, k city.Kind) string {
	switch t {
	case event.TypeCameraDetection, event.TypeCameraHealth:
		return "camera"
	case event.TypeCheckpointPass:
		return "checkpoint"
	case event.TypeFuelPurchase:
		return "fuel"
	case event.TypeDroneTelemetry, event.TypeDroneDetection:
		return "drone"
	case event.TypePatrolPosition, event.TypePatrolStatus:
		return "patrol"
	}
	switch k {
	case city.KindCheckpoint:
		return "checkpoint"
	case city.KindFuelTerminal:
		return "fuel"
	case city.KindDrone:
		return "drone"
	case city.KindUnit:
		return "patrol"
	}
	return "camera"
}

// AppendWire appends the JSON object a field device sends for e: the raw
// form of CONTRACT.md section 2, with buyer_id and buyer_name in the clear
// for fuel purchases (unlike event.AppendJSON, which writes the normalised
// form). Times are written in China Standard Time with milliseconds,
// positions with 6 decimals (about 0.1 m).
func AppendWire(dst []byte, e *event.Event) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendQuoted(dst, e.ID)
	dst = append(dst, `,"type":"`...)
	dst = append(dst, e.Type.String()...)
	dst = append(dst, `","device_id":`...)
	dst = appendQuoted(dst, e.DeviceID)
	dst = append(dst, `,"time":"`...)
	dst = e.Time.In(city.Location).AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	dst = append(dst, `","lat":`...)
	dst = appendFixed(dst, e.Lat, 6)
	dst = append(dst, `,"lon":`...)
	dst = appendFixed(dst, e.Lon, 6)
	switch e.Type {
	case event.TypeCameraDetection, event.TypeDroneDetection:
		if e.Type == event.TypeCameraDetection {
			dst = appendStr(dst, "camera_class", e.CameraClass)
		}
		dst = appendStr(dst, "object", e.Object)
		dst = appendOpt(dst, "behavior", e.Behavior)
		dst = append(dst, `,"count":`...)
		dst = strconv.AppendInt(dst, int64(e.Count), 10)
		dst = appendOpt(dst, "plate", e.Plate)
		dst = appendOpt(dst, "plate_color", e.PlateColor)
		dst = appendNum(dst, "confidence", e.Confidence, 2)
		dst = appendOpt(dst, "track_id", e.TrackID)
		if e.Type == event.TypeDroneDetection {
			dst = appendNum(dst, "alt_m", e.AltM, 1)
		}
	case event.TypeCameraHealth:
		dst = appendStr(dst, "status", e.Status)
		dst = appendOpt(dst, "detail", e.Detail)
	case event.TypeCheckpointPass:
		dst = append(dst, `,"lane":`...)
		dst = strconv.AppendInt(dst, int64(e.Lane), 10)
		dst = appendStr(dst, "plate", e.Plate)
		dst = appendStr(dst, "plate_color", e.PlateColor)
		dst = appendStr(dst, "vehicle_type", e.VehicleType)
		dst = appendOpt(dst, "vehicle_color", e.VehicleColor)
		dst = appendNum(dst, "speed_kmh", e.SpeedKmh, 1)
		if e.HasHeading {
			dst = appendNum(dst, "heading_deg", e.HeadingDeg, 0)
		}
		dst = appendNum(dst, "confidence", e.Confidence, 2)
	case event.TypeFuelPurchase:
		dst = appendStr(dst, "station_id", e.StationID)
		dst = appendStr(dst, "buyer_id", e.BuyerID)
		dst = appendStr(dst, "buyer_name", e.BuyerName)
		dst = appendOpt(dst, "plate", e.Plate)
		dst = appendStr(dst, "fuel", e.Fuel)
		dst = appendStr(dst, "container", e.Container)
		dst = appendNum(dst, "volume_l", e.VolumeL, 1)
		dst = appendOpt(dst, "permit_no", e.PermitNo)
	case event.TypeDroneTelemetry:
		dst = appendStr(dst, "mission_id", e.MissionID)
		dst = appendNum(dst, "alt_m", e.AltM, 1)
		dst = appendNum(dst, "heading_deg", e.HeadingDeg, 0)
		dst = appendNum(dst, "speed_ms", e.SpeedMs, 1)
		dst = appendNum(dst, "battery_pct", e.BatteryPct, 0)
	case event.TypePatrolPosition:
		dst = appendNum(dst, "speed_kmh", e.SpeedKmh, 1)
		dst = appendNum(dst, "heading_deg", e.HeadingDeg, 0)
		dst = appendStr(dst, "status", e.Status)
	case event.TypePatrolStatus:
		dst = appendStr(dst, "dispatch_id", e.DispatchID)
		dst = appendStr(dst, "status", e.Status)
	}
	if len(e.Attrs) > 2 && e.Attrs[0] == '{' {
		// Extra fields ride along at the top level, as a device would send them.
		dst = append(dst, ',')
		dst = append(dst, e.Attrs[1:len(e.Attrs)-1]...)
	}
	return append(dst, '}')
}

func appendStr(dst []byte, name, v string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendQuoted(dst, v)
}

func appendOpt(dst []byte, name, v string) []byte {
	if v == "" {
		return dst
	}
	return appendStr(dst, name, v)
}

func appendNum(dst []byte, name string, v float64, prec int) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendFixed(dst, v, prec)
}

// appendFixed writes v with prec decimals, trailing zeros dropped.
func appendFixed(dst []byte, v float64, prec int) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(dst, '0')
	}
	start := len(dst)
	dst = strconv.AppendFloat(dst, v, 'f', prec, 64)
	if prec > 0 {
		for dst[len(dst)-1] == '0' {
			dst = dst[:len(dst)-1]
		}
		if dst[len(dst)-1] == '.' {
			dst = dst[:len(dst)-1]
		}
	}
	if string(dst[start:]) == "-0" {
		dst = append(dst[:start], '0')
	}
	return dst
}

// appendQuoted writes s as a JSON string. Simulated strings hold no control
// characters, but quotes and backslashes are escaped all the same.
func appendQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20:
				dst = append(dst, `\u00`...)
				dst = append(dst, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		_, n := utf8.DecodeRuneInString(s[i:])
		dst = append(dst, s[i:i+n]...)
		i += n
	}
	return append(dst, '"')
}

// ids makes event ids: a fixed prefix per source and run, then a counter in
// base 36. The same seed gives the same ids.
type ids struct {
	prefix []byte
	n      uint64
	buf    []byte
}

func newIDs(prefix string, seed uint64) ids {
	p := []byte(prefix)
	p = append(p, '-')
	p = strconv.AppendUint(p, seed, 36)
	p = append(p, '-')
	return ids{prefix: p}
}

func (x *ids) next() string {
	x.n++
	x.buf = append(x.buf[:0], x.prefix...)
	x.buf = strconv.AppendUint(x.buf, x.n, 36)
	return string(x.buf)
}

// hash64 mixes a string and a seed into 64 bits (FNV-1a then splitmix64),
// for per-device choices that must not depend on iteration order.
func hash64(s string, seed uint64) uint64 {
	h := uint64(14695981039346656037) ^ seed
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

// unit returns a number in [0, 1) from a hash.
func unit(h uint64) float64 { return float64(h>>11) / (1 << 53) }

// durationOf returns seconds as a Duration.
func durationOf(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
