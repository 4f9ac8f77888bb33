package gateway

import (
	"strconv"
	"time"

	"citywatch/event"
)

// AppendRaw appends the raw device message of e (CONTRACT.md section 2)
// that the gateway writes on the device topics, with the time in loc and
// milliseconds. It writes the fields of the types the gateway makes:
// camera.detection, camera.health, checkpoint.pass and device.heartbeat.
// The plate is written as read: ingest normalises it like any device's.
// The members of e.Attrs (a JSON object, such as a GA/T 1400 record's
// image references) are written beside the fields, as a device's extra
// fields are, for ingest to keep in attrs.
func AppendRaw(dst []byte, e *event.Event, loc *time.Location) []byte {
	dst = append(dst, `{"id":`...)
	dst = event.AppendJSONString(dst, e.ID)
	dst = append(dst, `,"type":"`...)
	dst = append(dst, e.Type.String()...)
	dst = append(dst, `","device_id":`...)
	dst = event.AppendJSONString(dst, e.DeviceID)
	dst = append(dst, `,"time":"`...)
	dst = e.Time.In(loc).AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	dst = append(dst, `","lat":`...)
	dst = event.AppendJSONFloat(dst, e.Lat)
	dst = append(dst, `,"lon":`...)
	dst = event.AppendJSONFloat(dst, e.Lon)
	switch e.Type {
	case event.TypeCameraDetection:
		dst = str(dst, "camera_class", e.CameraClass)
		dst = str(dst, "object", e.Object)
		dst = opt(dst, "behavior", e.Behavior)
		dst = append(dst, `,"count":`...)
		dst = strconv.AppendInt(dst, int64(max(e.Count, 1)), 10)
		dst = opt(dst, "plate", e.Plate)
		dst = opt(dst, "plate_color", e.PlateColor)
		dst = num(dst, "confidence", e.Confidence)
		dst = opt(dst, "track_id", e.TrackID)
	case event.TypeCameraHealth:
		dst = str(dst, "status", e.Status)
		dst = opt(dst, "detail", e.Detail)
	case event.TypeCheckpointPass:
		dst = append(dst, `,"lane":`...)
		dst = strconv.AppendInt(dst, int64(e.Lane), 10)
		dst = str(dst, "plate", e.Plate)
		dst = str(dst, "plate_color", e.PlateColor)
		dst = str(dst, "vehicle_type", e.VehicleType)
		dst = opt(dst, "vehicle_color", e.VehicleColor)
		dst = num(dst, "speed_kmh", e.SpeedKmh)
		if e.HasHeading {
			dst = num(dst, "heading_deg", e.HeadingDeg)
		}
		dst = num(dst, "confidence", e.Confidence)
	}
	if len(e.Attrs) > 2 && e.Attrs[0] == '{' && e.Attrs[len(e.Attrs)-1] == '}' {
		dst = append(dst, ',')
		dst = append(dst, e.Attrs[1:len(e.Attrs)-1]...)
	}
	return append(dst, '}')
}

func str(dst []byte, name, v string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return event.AppendJSONString(dst, v)
}

func opt(dst []byte, name, v string) []byte {
	if v == "" {
		return dst
	}
	return str(dst, name, v)
}

func num(dst []byte, name string, v float64) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return event.AppendJSONFloat(dst, v)
}
