package rtp

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// The ONVIF metadata this package reads (ONVIF Analytics Service / Profile
// M, tt = http://www.onvif.org/ver10/schema):
//
//	<tt:MetadataStream>
//	  <tt:VideoAnalytics>
//	    <tt:Frame UtcTime="2026-11-26T00:15:30.125Z">
//	      <tt:Object ObjectId="17">
//	        <tt:Appearance>
//	          <tt:Class><tt:Type Likelihood="0.93">Vehicle</tt:Type></tt:Class>
//	          <tt:LicensePlateInfo>
//	            <tt:PlateNumber Likelihood="0.88">鄂F12345</tt:PlateNumber>
//	            <tt:PlateColor>blue</tt:PlateColor>
//	          </tt:LicensePlateInfo>
//	        </tt:Appearance>
//	      </tt:Object>
//	    </tt:Frame>
//	  </tt:VideoAnalytics>
//	  <tt:Event>
//	    <wsnt:NotificationMessage>
//	      <wsnt:Topic>tns1:RuleEngine/LoiteringDetector/ObjectIsLoitering</wsnt:Topic>
//	      <wsnt:Message>
//	        <tt:Message UtcTime="…" PropertyOperation="Changed">
//	          <tt:Data><tt:SimpleItem Name="IsLoitering" Value="true"/></tt:Data>
//	        </tt:Message>
//	      </wsnt:Message>
//	    </wsnt:NotificationMessage>
//	  </tt:Event>
//	</tt:MetadataStream>
//
// Class types are read from tt:Class/tt:Type (Likelihood attribute, ONVIF
// 2.1+) or tt:Class/tt:ClassCandidate (Type and Likelihood elements, ONVIF
// 1.x); the most likely type that citywatch knows wins. The plate is
// tt:Appearance/tt:LicensePlateInfo/tt:PlateNumber (Profile M);
// tt:VehicleInfo/tt:PlateNumber is accepted too. tt:PlateColor inside
// either is a citywatch extension (blue, yellow, green, white, black, or
// the Chinese colour names), since ONVIF has no plate colour.

// Limits of one document.
const (
	maxObjects       = 1024
	maxNotifications = 64
	maxTextBytes     = 256
)

// Errors of Parse.
var (
	// ErrNotMetadata is returned for a document whose root is not a
	// tt:MetadataStream.
	ErrNotMetadata = errors.New("root is not tt:MetadataStream")
	// ErrTooManyObjects is returned for a document with more objects or
	// notifications than the limits.
	ErrTooManyObjects = errors.New("too many objects in one document")
)

// Object is one tt:Object of a frame.
type Object struct {
	Frame      int       // index of its tt:Frame in the document
	Time       time.Time // the frame's UtcTime; zero when absent
	ID         string    // ObjectId
	Class      string    // person, vehicle, face, non_motor
	Likelihood float64   // 0–1
	Plate      string    // as read
	PlateColor string    // blue, yellow, green, white, black or ""
}

// Notification is one analytics event (wsnt:NotificationMessage) whose
// topic maps to a behaviour of the contract.
type Notification struct {
	Time       time.Time // tt:Message UtcTime; zero when absent
	Behavior   string
	Object     string // from a Data item naming the class, else by behaviour
	Count      int
	Likelihood float64
}

// Document is a parsed tt:MetadataStream. Parse reuses its slices; what
// it holds is valid until the next Parse.
type Document struct {
	Objects       []Object
	Notifications []Notification
	// Skipped counts objects of classes citywatch does not track
	// (animals, "Other"), notifications of other topics and notifications
	// that report a state ending.
	Skipped int

	sc   scanner
	text []byte
}

// Parse parses one document into d. On error d holds what was read up to
// the error and must not be used.
func (d *Document) Parse(b []byte) error {
	d.Objects = d.Objects[:0]
	d.Notifications = d.Notifications[:0]
	d.Skipped = 0
	d.sc.reset(b)
	s := &d.sc

	var (
		frame       = -1
		frameTime   time.Time
		frameRaw    []byte // UtcTime of the frame, parsed once it has an object
		frameParsed bool
		inObject    bool
		obj         Object
		candClass   string
		candLik     float64
		typeLik     float64
		inNotif     bool
		notif       Notification
		topicOK     bool
		inactive    bool
		dataClass   string
		itemName    []byte
		itemValue   []byte
		sawRoot     bool
	)
	for {
		if err := s.next(); err != nil {
			return err
		}
		switch s.kind {
		case tokEOF:
			if !sawRoot {
				return ErrNotMetadata
			}
			return nil
		case tokText:
			if len(d.text)+len(s.text) > maxTextBytes {
				continue // only short leaf values are read; the rest is skipped
			}
			if s.cdata {
				d.text = append(d.text, s.text...)
				continue
			}
			var err error
			if d.text, err = unescape(d.text, s.text); err != nil {
				return err
			}
		case tokStart:
			d.text = d.text[:0]
			name := string(s.name) // no allocation: compared, not kept
			if s.depth == 1 {
				if name != "MetadataStream" {
					return ErrNotMetadata
				}
				sawRoot = true
				continue
			}
			switch name {
			case "Frame":
				frame++
				frameTime, frameParsed = time.Time{}, false
				frameRaw, _ = attr(s.attrs, "UtcTime")
			case "Object":
				if inObject || frame < 0 {
					continue // objects outside frames (scene descriptions) are not detections
				}
				inObject = true
				if !frameParsed && frameRaw != nil {
					frameTime, _ = parseUtc(frameRaw)
				}
				frameParsed = true
				obj = Object{Frame: frame, Time: frameTime, Likelihood: -1}
				if v, ok := attr(s.attrs, "ObjectId"); ok && len(v) <= 64 {
					obj.ID = string(v)
				}
			case "ClassCandidate":
				candClass, candLik = "", -1
			case "Type":
				typeLik = -1
				if v, ok := attr(s.attrs, "Likelihood"); ok {
					typeLik = parseLikelihood(v)
				}
			case "NotificationMessage":
				if inNotif {
					return errXMLSyntax
				}
				inNotif, topicOK, inactive, dataClass = true, false, false, ""
				notif = Notification{Count: 1, Likelihood: 1}
			case "Message":
				if inNotif {
					if v, ok := attr(s.attrs, "UtcTime"); ok {
						notif.Time, _ = parseUtc(v)
					}
					if v, ok := attr(s.attrs, "PropertyOperation"); ok && string(v) == "Deleted" {
						inactive = true
					}
				}
			case "SimpleItem", "ElementItem":
				itemName, _ = attr(s.attrs, "Name")
				itemValue, _ = attr(s.attrs, "Value")
			}
		case tokEnd:
			parent := ""
			if s.depth >= 1 {
				parent = string(localName(s.stack[s.depth-1]))
			}
			name := string(s.name)
			text := bytes.TrimSpace(d.text)
			switch name {
			case "Type":
				if !inObject {
					break
				}
				switch parent {
				case "Class":
					if c, lik := objectClass(text), likelihoodOr1(typeLik); c != "" && lik > obj.Likelihood {
						obj.Class, obj.Likelihood = c, lik
					}
				case "ClassCandidate":
					candClass = objectClass(text)
				case "VehicleInfo":
					if obj.Class == "" {
						obj.Class, obj.Likelihood = "vehicle", likelihoodOr1(typeLik)
					}
				}
			case "Likelihood":
				if inObject && parent == "ClassCandidate" {
					candLik = parseLikelihood(text)
				}
			case "ClassCandidate":
				if lik := likelihoodOr1(candLik); inObject && candClass != "" && lik > obj.Likelihood {
					obj.Class, obj.Likelihood = candClass, lik
				}
			case "PlateNumber":
				if inObject && len(text) > 0 && len(text) <= 64 {
					obj.Plate = string(text)
				}
			case "PlateColor":
				if inObject {
					obj.PlateColor = plateColor(text)
				}
			case "Object":
				if !inObject {
					break
				}
				inObject = false
				if obj.Class == "" && obj.Plate != "" {
					obj.Class = "vehicle"
				}
				if obj.Class == "" {
					d.Skipped++
					break
				}
				if obj.Likelihood < 0 {
					obj.Likelihood = 1
				}
				if len(d.Objects) >= maxObjects {
					return ErrTooManyObjects
				}
				d.Objects = append(d.Objects, obj)
			case "Topic":
				if inNotif {
					notif.Behavior = topicBehavior(text)
					topicOK = notif.Behavior != ""
				}
			case "SimpleItem", "ElementItem":
				if !inNotif {
					break
				}
				switch {
				case isStateItem(itemName) && equalFold(itemValue, "false"):
					inactive = true
				case equalFold(itemName, "ObjectClass") || equalFold(itemName, "ClassTypes") || equalFold(itemName, "ObjectType") || equalFold(itemName, "Class"):
					dataClass = objectClass(itemValue)
				case equalFold(itemName, "Count") || equalFold(itemName, "ObjectCount") || equalFold(itemName, "Number"):
					if n, err := strconv.Atoi(string(itemValue)); err == nil && n >= 1 && n <= 1_000_000 {
						notif.Count = n
					}
				case equalFold(itemName, "Likelihood") || equalFold(itemName, "Confidence"):
					notif.Likelihood = likelihoodOr1(parseLikelihood(itemValue))
				}
			case "NotificationMessage":
				inNotif = false
				if !topicOK || inactive {
					d.Skipped++
					break
				}
				notif.Object = dataClass
				if notif.Object == "" {
					notif.Object = "person"
					if notif.Behavior == "wrong_way" {
						notif.Object = "vehicle"
					}
				}
				if len(d.Notifications) >= maxNotifications {
					return ErrTooManyObjects
				}
				d.Notifications = append(d.Notifications, notif)
			}
			d.text = d.text[:0]
		}
	}
}

func likelihoodOr1(v float64) float64 {
	if v < 0 {
		return 1
	}
	return v
}

// parseLikelihood reads a likelihood 0–1 (a percentage above 1 is scaled
// down, as some cameras send 0–100); -1 when it is not a number.
func parseLikelihood(b []byte) float64 {
	v, err := strconv.ParseFloat(string(bytes.TrimSpace(b)), 64)
	switch {
	case err != nil || v != v || v < 0:
		return -1
	case v > 1 && v <= 100:
		return v / 100
	case v > 100:
		return -1
	}
	return v
}

// parseUtc reads an xs:dateTime; one without zone is UTC, as ONVIF
// metadata times are.
func parseUtc(b []byte) (time.Time, error) {
	s := string(bytes.TrimSpace(b))
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	t, err := time.ParseInLocation("2006-01-02T15:04:05.999999999", s, time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("cannot parse UtcTime: %w", err)
	}
	return t, nil
}

// objectClass maps an ONVIF class type (ClassType, ObjectType, or what
// cameras send in practice) to the contract's object, or "".
func objectClass(b []byte) string {
	b = bytes.TrimSpace(b)
	if j := bytes.LastIndexByte(b, ':'); j >= 0 {
		b = b[j+1:]
	}
	for _, m := range classNames {
		if equalFold(b, m.name) {
			return m.object
		}
	}
	return ""
}

var classNames = []struct{ name, object string }{
	{"Human", "person"}, {"Person", "person"}, {"Pedestrian", "person"}, {"People", "person"},
	{"Face", "face"}, {"HumanFace", "face"},
	{"Vehicle", "vehicle"}, {"Vehical", "vehicle"}, {"Car", "vehicle"}, {"Truck", "vehicle"},
	{"Bus", "vehicle"}, {"Van", "vehicle"}, {"MotorVehicle", "vehicle"}, {"Motorcycle", "vehicle"},
	{"LicensePlate", "vehicle"},
	{"Bicycle", "non_motor"}, {"Bike", "non_motor"}, {"NonMotorVehicle", "non_motor"},
	{"Non_Motor", "non_motor"}, {"NonMotor", "non_motor"}, {"Tricycle", "non_motor"}, {"EBike", "non_motor"},
}

// plateColor maps a plate colour name (English or Chinese) to the
// contract's value, or "".
func plateColor(b []byte) string {
	b = bytes.TrimSpace(b)
	for _, m := range plateColorNames {
		if equalFold(b, m.name) {
			return m.color
		}
	}
	return ""
}

var plateColorNames = []struct{ name, color string }{
	{"blue", "blue"}, {"蓝", "blue"}, {"蓝色", "blue"},
	{"yellow", "yellow"}, {"黄", "yellow"}, {"黄色", "yellow"},
	{"green", "green"}, {"绿", "green"}, {"绿色", "green"}, {"渐变绿", "green"}, {"黄绿", "green"},
	{"white", "white"}, {"白", "white"}, {"白色", "white"},
	{"black", "black"}, {"黑", "black"}, {"黑色", "black"},
}

// topicBehavior maps an event topic (tns1:RuleEngine/FieldDetector/…) to
// the contract's behaviour, or "".
func topicBehavior(topic []byte) string {
	for _, m := range topicNames {
		if containsFold(topic, m.part) {
			return m.behavior
		}
	}
	return ""
}

// topicNames is checked in order: the first part found in the topic wins.
var topicNames = []struct{ part, behavior string }{
	{"Loiter", "loitering"},
	{"FieldDetector", "intrusion"}, {"LineDetector", "intrusion"}, {"Intrusion", "intrusion"},
	{"LineCross", "intrusion"}, {"Tripwire", "intrusion"},
	{"Fight", "fight"}, {"Violen", "fight"},
	{"WrongWay", "wrong_way"}, {"Wrong_Way", "wrong_way"}, {"Retrograde", "wrong_way"}, {"OppositeDirection", "wrong_way"},
	{"Crowd", "crowd"}, {"Gathering", "crowd"},
	{"Smoke", "smoke_fire"}, {"Fire", "smoke_fire"}, {"Flame", "smoke_fire"},
	{"FallDetect", "fall"}, {"/Fall", "fall"}, {"PersonFall", "fall"},
}

// isStateItem reports whether a Data item names the state of a detector
// (IsInside, IsLoitering, State, Active…), whose "false" ends the event.
func isStateItem(name []byte) bool {
	return len(name) > 2 && (name[0] == 'I' || name[0] == 'i') && (name[1] == 's' || name[1] == 'S') ||
		equalFold(name, "State") || equalFold(name, "Active") || equalFold(name, "Detected")
}

// equalFold is strings.EqualFold for a byte slice and an ASCII or UTF-8
// string, without converting.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func containsFold(b []byte, s string) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		if equalFold(b[i:i+len(s)], s) {
			return true
		}
	}
	return false
}
