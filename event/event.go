// Package event holds citywatch's canonical input events: the types of the
// wire contract (CONTRACT.md section 2), their JSON decoder and encoder,
// validation, plate normal form and resident ID-number rules, and the keyed
// pseudonymisation of fuel buyers.
//
// It sits at the start of the data flow: ingest decodes raw device messages
// into an Event, validates it, pseudonymises personal fields and re-encodes
// the normalised form for every later stage. It depends on nothing else in
// citywatch.
//
// An Event is one flat struct for every type, so that one value can be reused
// across messages on the hot path without allocation; the fields that do not
// belong to an event's Type are zero.
package event

import (
	"bytes"
	"time"
)

// Type is the kind of an event (the JSON "type" field).
type Type uint8

// The event types of the wire contract.
const (
	TypeUnknown Type = iota
	TypeCameraDetection
	TypeCameraHealth
	TypeCheckpointPass
	TypeFuelPurchase
	TypeDroneTelemetry
	TypeDroneDetection
	TypePatrolPosition
	TypePatrolStatus
	TypeDeviceHeartbeat
	numTypes
)

var typeNames = [numTypes]string{
	TypeUnknown:         "",
	TypeCameraDetection: "camera.detection",
	TypeCameraHealth:    "camera.health",
	TypeCheckpointPass:  "checkpoint.pass",
	TypeFuelPurchase:    "fuel.purchase",
	TypeDroneTelemetry:  "drone.telemetry",
	TypeDroneDetection:  "drone.detection",
	TypePatrolPosition:  "patrol.position",
	TypePatrolStatus:    "patrol.status",
	TypeDeviceHeartbeat: "device.heartbeat",
}

// String returns the wire name of t ("camera.detection"), or "" for
// TypeUnknown.
func (t Type) String() string {
	if t >= numTypes {
		return ""
	}
	return typeNames[t]
}

// ParseType returns the Type with wire name s, or TypeUnknown.
func ParseType(s string) Type {
	for i := TypeCameraDetection; i < numTypes; i++ {
		if typeNames[i] == s {
			return i
		}
	}
	return TypeUnknown
}

// Types lists every known type in declaration order.
func Types() []Type {
	ts := make([]Type, 0, numTypes-1)
	for i := TypeCameraDetection; i < numTypes; i++ {
		ts = append(ts, i)
	}
	return ts
}

// Event is one input event of any type. String fields that come from a
// decoded message may share memory with the decoder's copy of that message;
// an Event is therefore owned by whoever decoded it, and Reset makes it ready
// for the next message.
type Event struct {
	// Common to every type.
	ID       string
	Type     Type
	DeviceID string
	// Time is when it happened by the device's clock, in the offset the
	// device sent (kept for re-encoding); compare instants with Time.Equal
	// or Time.UnixMilli.
	Time time.Time
	Lat  float64
	Lon  float64

	// camera.detection, drone.detection.
	CameraClass string // "A" or "B"; camera.detection only
	Object      string // person, vehicle, non_motor, face
	Behavior    string // optional: loitering, intrusion, fight, fall, crowd, smoke_fire, wrong_way
	Count       int    // ≥ 1, default 1
	TrackID     string
	AltM        float64 // drone.detection, drone.telemetry

	// Plates: camera.detection, drone.detection, checkpoint.pass, fuel.purchase.
	// Plate is the normal form (upper case, half-width, no separators) when
	// PlateValid, otherwise the plate as read. An empty plate is not valid.
	Plate      string
	PlateValid bool
	PlateColor string // blue, yellow, green, white, black or ""

	// Confidence is 0–1, default 1 (detections and checkpoint passes).
	Confidence float64

	// camera.health: ok, video_loss, tamper, blur, offline.
	// patrol.position: available, busy, off_duty.
	// patrol.status: accepted, declined, en_route, on_scene, cleared.
	Status string
	Detail string // camera.health, optional

	// checkpoint.pass.
	Lane         int
	VehicleType  string // car, suv, van, truck, bus, motorcycle, other
	VehicleColor string
	SpeedKmh     float64 // checkpoint.pass, patrol.position
	HeadingDeg   float64 // checkpoint.pass (optional), drone.telemetry, patrol.position
	HasHeading   bool    // whether heading_deg was present

	// fuel.purchase. BuyerID and BuyerName are raw personal data: they are
	// set only between decoding and Pseudonymizer.Apply, which clears them
	// and fills the pseudonym and masked forms.
	StationID       string
	BuyerID         string
	BuyerName       string
	BuyerPseudonym  string // keyed HMAC-SHA-256 of the normalised ID number
	BuyerIDMasked   string // 420602********123X
	BuyerNameMasked string // 张*
	Fuel            string // 92, 95, 98, diesel
	Container       string // bulk, vehicle
	VolumeL         float64
	PermitNo        string

	// drone.telemetry.
	MissionID  string
	SpeedMs    float64
	BatteryPct float64

	// patrol.status.
	DispatchID string

	// Attrs holds the unknown extra fields of the message as one JSON
	// object ("{...}"), or is empty when there were none.
	Attrs []byte
}

// Reset clears e for reuse, keeping the capacity of its buffers.
func (e *Event) Reset() {
	attrs := e.Attrs[:0]
	*e = Event{}
	e.Attrs = attrs
}

// PeekType returns the type of a message as AppendJSON writes it, without
// decoding it: the value of the first "type" member, which AppendJSON
// writes second, after id. It reports TypeUnknown when it cannot tell; a
// message of another writer may need Decode to know. It does not allocate.
func PeekType(msg []byte) Type {
	const key = `"type":"`
	head := msg[:min(len(msg), peekTypeWithin)]
	i := bytes.Index(head, []byte(key))
	if i < 0 {
		return TypeUnknown
	}
	rest := head[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return TypeUnknown
	}
	return ParseType(string(rest[:j]))
}

// peekTypeWithin is how far into a message PeekType looks: past an id of
// 128 characters, escaped.
const peekTypeWithin = 1024
