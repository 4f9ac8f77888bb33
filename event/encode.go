package event

import (
	"math"
	"strconv"
	"unicode/utf8"
)

// AppendJSON appends the normalised JSON object of e to dst and returns the
// extended slice; it does not allocate when dst has room.
//
// The object has the contract's field names and only the fields of e.Type,
// in a fixed order: optional fields that are absent or empty are left out,
// count and confidence are always written where the type has them, and
// plate_valid comes with every plate. time is RFC 3339 with the event's
// own offset and milliseconds, with more digits only when the time has
// sub-millisecond precision, so that DecodeNormalized gives back the same
// instant. A fuel.purchase carries buyer_pseudonym, buyer_id_masked and
// buyer_name_masked and never buyer_id or buyer_name, even when they are
// still set. Attrs, when not empty, is written verbatim as "attrs".
func AppendJSON(dst []byte, e *Event) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, e.ID)
	dst = append(dst, `,"type":`...)
	dst = appendString(dst, e.Type.String())
	dst = append(dst, `,"device_id":`...)
	dst = appendString(dst, e.DeviceID)
	dst = append(dst, `,"time":"`...)
	dst = appendTime(dst, e.Time)
	dst = append(dst, `","lat":`...)
	dst = appendFloat(dst, e.Lat)
	dst = append(dst, `,"lon":`...)
	dst = appendFloat(dst, e.Lon)

	switch e.Type {
	case TypeCameraDetection:
		dst = appendStringField(dst, "camera_class", e.CameraClass)
		dst = appendDetection(dst, e)
	case TypeDroneDetection:
		dst = appendDetection(dst, e)
		if e.AltM != 0 {
			dst = appendFloatField(dst, "alt_m", e.AltM)
		}
	case TypeCameraHealth:
		dst = appendStringField(dst, "status", e.Status)
		dst = appendOptString(dst, "detail", e.Detail)
	case TypeCheckpointPass:
		dst = append(dst, `,"lane":`...)
		dst = strconv.AppendInt(dst, int64(e.Lane), 10)
		dst = appendPlate(dst, e, true)
		dst = appendStringField(dst, "plate_color", e.PlateColor)
		dst = appendStringField(dst, "vehicle_type", e.VehicleType)
		dst = appendOptString(dst, "vehicle_color", e.VehicleColor)
		dst = appendFloatField(dst, "speed_kmh", e.SpeedKmh)
		if e.HasHeading {
			dst = appendFloatField(dst, "heading_deg", e.HeadingDeg)
		}
		dst = appendFloatField(dst, "confidence", e.Confidence)
	case TypeFuelPurchase:
		dst = appendStringField(dst, "station_id", e.StationID)
		dst = appendStringField(dst, "buyer_pseudonym", e.BuyerPseudonym)
		dst = appendStringField(dst, "buyer_id_masked", e.BuyerIDMasked)
		dst = appendStringField(dst, "buyer_name_masked", e.BuyerNameMasked)
		dst = appendPlate(dst, e, false)
		dst = appendStringField(dst, "fuel", e.Fuel)
		dst = appendStringField(dst, "container", e.Container)
		dst = appendFloatField(dst, "volume_l", e.VolumeL)
		dst = appendOptString(dst, "permit_no", e.PermitNo)
	case TypeDroneTelemetry:
		dst = appendStringField(dst, "mission_id", e.MissionID)
		dst = appendFloatField(dst, "alt_m", e.AltM)
		dst = appendFloatField(dst, "heading_deg", e.HeadingDeg)
		dst = appendFloatField(dst, "speed_ms", e.SpeedMs)
		dst = appendFloatField(dst, "battery_pct", e.BatteryPct)
	case TypePatrolPosition:
		dst = appendFloatField(dst, "speed_kmh", e.SpeedKmh)
		dst = appendFloatField(dst, "heading_deg", e.HeadingDeg)
		dst = appendStringField(dst, "status", e.Status)
	case TypePatrolStatus:
		dst = appendStringField(dst, "dispatch_id", e.DispatchID)
		dst = appendStringField(dst, "status", e.Status)
	}
	if len(e.Attrs) > 0 {
		dst = append(dst, `,"attrs":`...)
		dst = append(dst, e.Attrs...)
	}
	return append(dst, '}')
}

func appendDetection(dst []byte, e *Event) []byte {
	dst = appendStringField(dst, "object", e.Object)
	dst = appendOptString(dst, "behavior", e.Behavior)
	dst = append(dst, `,"count":`...)
	dst = strconv.AppendInt(dst, int64(e.Count), 10)
	dst = appendPlate(dst, e, false)
	dst = appendOptString(dst, "plate_color", e.PlateColor)
	dst = appendFloatField(dst, "confidence", e.Confidence)
	return appendOptString(dst, "track_id", e.TrackID)
}

// appendPlate writes plate and plate_valid; an optional empty plate is
// left out.
func appendPlate(dst []byte, e *Event, required bool) []byte {
	if e.Plate == "" && !required {
		return dst
	}
	dst = appendStringField(dst, "plate", e.Plate)
	if e.PlateValid {
		return append(dst, `,"plate_valid":true`...)
	}
	return append(dst, `,"plate_valid":false`...)
}

func appendStringField(dst []byte, name, v string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendString(dst, v)
}

func appendOptString(dst []byte, name, v string) []byte {
	if v == "" {
		return dst
	}
	return appendStringField(dst, name, v)
}

func appendFloatField(dst []byte, name string, v float64) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendFloat(dst, v)
}

// appendFloat writes v as a JSON number in its shortest exact form, as
// encoding/json does; NaN and infinities, which no decoded event holds,
// are written as 0 so that the output stays JSON.
func appendFloat(dst []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(dst, '0')
	}
	abs := math.Abs(v)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, v, format, -1, 64)
	if format == 'e' {
		// Clean up e-09 to e-9, as encoding/json does.
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string, escaped as AppendJSON
// escapes event fields; other wire encoders (alerts) share it.
func AppendJSONString(dst []byte, s string) []byte { return appendString(dst, s) }

// AppendJSONFloat appends v as a JSON number in its shortest form, as
// AppendJSON writes event fields; NaN and infinities become 0.
func AppendJSONFloat(dst []byte, v float64) []byte { return appendFloat(dst, v) }

// appendString writes s as a JSON string: '"', '\' and control characters
// escaped, invalid UTF-8 replaced by U+FFFD, everything else as is. No
// character is written longer than the shortest JSON escape for it, so a
// decoded string never grows when it is written again.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
