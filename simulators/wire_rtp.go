package simulators

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	"citywatch/event"
	"citywatch/ingest/rtp"
)

// RTPSender sends the camera.detection events of cameras to the gateway
// as a camera streams analytics metadata (CONTRACT.md section 7): each
// event is one ONVIF tt:MetadataStream document, split into RTP packets of
// at most rtp.MaxPacketSize bytes with the marker bit on the last, with
// per-camera sequence numbers, a 90 kHz timestamp from the event time, and
// the SSRC SSRCOf(device id). It is not safe for concurrent use.
type RTPSender struct {
	conn *net.UDPConn
	// Loss is the share of packets deliberately not sent, and Reorder the
	// share held back and sent after the next packet, to test the
	// gateway's loss and reordering measurement.
	Loss, Reorder float64
	// SSRCOf gives the SSRC a device streams with (rtp.SSRCs of the city
	// file); nil means rtp.SSRC of its id.
	SSRCOf func(deviceID string) uint32
	held   []byte

	rng     *rand.Rand
	streams map[string]*rtpStream
	doc     []byte
	buf     []byte
	// Packets, Dropped and Reordered count the packets sent, deliberately
	// lost and sent out of order; Documents counts the documents.
	Packets, Dropped, Reordered, Documents uint64
	err                                    error
}

type rtpStream struct {
	p      rtp.Packetizer
	base   uint32    // RTP timestamp of start
	start  time.Time // event time of the first document
	last   time.Time // event time of the last document
	lastTS uint32
}

// NewRTPSender returns a sender to the gateway's RTP address (host:port);
// seed fixes the random initial sequence numbers and timestamps.
func NewRTPSender(addr string, seed uint64) (*RTPSender, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot resolve gateway RTP address: %w", err)
	}
	conn, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		return nil, fmt.Errorf("cannot open RTP socket: %w", err)
	}
	return &RTPSender{conn: conn, rng: rand.New(rand.NewPCG(seed, seed^0x5bd1e995)), streams: map[string]*rtpStream{}}, nil
}

// Close closes the socket.
func (s *RTPSender) Close() error { return s.conn.Close() }

// Send sends one camera.detection; events of other types are not
// streamed over RTP (the gateway makes health and heartbeats itself) and
// are ignored.
func (s *RTPSender) Send(e *event.Event) error {
	if e.Type != event.TypeCameraDetection {
		return nil
	}
	st := s.streams[e.DeviceID]
	if st == nil {
		ssrc := rtp.SSRC
		if s.SSRCOf != nil {
			ssrc = s.SSRCOf
		}
		st = &rtpStream{p: rtp.Packetizer{SSRC: ssrc(e.DeviceID), Seq: uint16(s.rng.Uint32())}, base: s.rng.Uint32(), start: e.Time}
		s.streams[e.DeviceID] = st
	}
	ts := st.base + uint32(e.Time.Sub(st.start)*rtp.ClockRate/time.Second)
	if st.lastTS != 0 && int32(ts-st.lastTS) <= 0 {
		ts = st.lastTS + 1 // one document per timestamp
	}
	st.lastTS, st.last = ts, e.Time
	s.doc = AppendMetadata(s.doc[:0], e)
	s.Documents++
	s.err = nil
	s.buf = st.p.Packetize(s.buf, s.doc, ts, s.write)
	return s.err
}

// KeepaliveEvery is how often a camera's metadata stream carries a frame
// when it has nothing to report: an ONVIF metadata stream runs at a fixed
// frame rate whether or not the scene holds objects, and the gateway takes
// a silent stream for a stalled one.
const KeepaliveEvery = time.Second

// Keepalive sends an empty frame on every stream that has sent nothing
// for KeepaliveEvery of stream time up to now (the event time of the
// simulation).
func (s *RTPSender) Keepalive(now time.Time) error {
	s.err = nil
	for _, st := range s.streams {
		if now.Sub(st.last) < KeepaliveEvery {
			continue
		}
		ts := st.base + uint32(now.Sub(st.start)*rtp.ClockRate/time.Second)
		if int32(ts-st.lastTS) <= 0 {
			continue
		}
		st.lastTS, st.last = ts, now
		s.doc = AppendEmptyFrame(s.doc[:0], now)
		s.Documents++
		s.buf = st.p.Packetize(s.buf, s.doc, ts, s.write)
	}
	return s.err
}

// AppendEmptyFrame appends an ONVIF metadata document of one frame at t
// with no object in it.
func AppendEmptyFrame(dst []byte, t time.Time) []byte {
	dst = append(dst, `<?xml version="1.0" encoding="UTF-8"?><tt:MetadataStream xmlns:tt="http://www.onvif.org/ver10/schema"><tt:VideoAnalytics><tt:Frame UtcTime="`...)
	dst = t.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z")
	return append(dst, `"></tt:Frame></tt:VideoAnalytics></tt:MetadataStream>`...)
}

func (s *RTPSender) write(pkt []byte) {
	if s.Loss > 0 && s.rng.Float64() < s.Loss {
		s.Dropped++
		return
	}
	if s.Reorder > 0 && s.held == nil && s.rng.Float64() < s.Reorder {
		s.held = append(s.held[:0:0], pkt...)
		s.Reordered++
		return
	}
	s.send(pkt)
	if s.held != nil {
		s.send(s.held)
		s.held = nil
	}
}

func (s *RTPSender) send(pkt []byte) {
	if _, err := s.conn.Write(pkt); err != nil && s.err == nil {
		s.err = fmt.Errorf("cannot send RTP packet: %w", err)
	}
	s.Packets++
}

// onvifClass is the ONVIF class type of each contract object.
var onvifClass = map[string]string{"person": "Human", "vehicle": "Vehicle", "face": "Face", "non_motor": "Bicycle"}

// onvifTopic is an analytics event topic for each behaviour.
var onvifTopic = map[string]string{
	"loitering":  "tns1:RuleEngine/LoiteringDetector/ObjectIsLoitering",
	"intrusion":  "tns1:RuleEngine/FieldDetector/ObjectsInside",
	"fight":      "tns1:RuleEngine/FightDetector/Fight",
	"fall":       "tns1:RuleEngine/FallDetector/PersonFall",
	"crowd":      "tns1:RuleEngine/CrowdDetector/Crowd",
	"smoke_fire": "tns1:RuleEngine/FireDetector/SmokeOrFire",
	"wrong_way":  "tns1:RuleEngine/WrongWayDetector/Detected",
}

// AppendMetadata appends the ONVIF metadata document of a
// camera.detection: a behaviour becomes one analytics event
// (wsnt:NotificationMessage with ObjectClass, Count and Likelihood data
// items); otherwise one frame with count objects of the class, the first
// carrying the track id as ObjectId and the plate in
// tt:LicensePlateInfo (with the citywatch tt:PlateColor extension).
func AppendMetadata(dst []byte, e *event.Event) []byte {
	utc := e.Time.UTC().Format("2006-01-02T15:04:05.000Z")
	dst = append(dst, `<?xml version="1.0" encoding="UTF-8"?><tt:MetadataStream xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" xmlns:tns1="http://www.onvif.org/ver10/topics">`...)
	conf := strconv.FormatFloat(e.Confidence, 'f', -1, 64)
	count := max(e.Count, 1)
	if topic, ok := onvifTopic[e.Behavior]; ok {
		dst = append(dst, `<tt:Event><wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">`...)
		dst = append(dst, topic...)
		dst = append(dst, `</wsnt:Topic><wsnt:Message><tt:Message UtcTime="`...)
		dst = append(dst, utc...)
		dst = append(dst, `" PropertyOperation="Changed"><tt:Source><tt:SimpleItem Name="VideoSourceConfigurationToken" Value="1"/></tt:Source><tt:Data><tt:SimpleItem Name="ObjectClass" Value="`...)
		dst = append(dst, onvifClass[e.Object]...)
		dst = append(dst, `"/><tt:SimpleItem Name="Count" Value="`...)
		dst = strconv.AppendInt(dst, int64(count), 10)
		dst = append(dst, `"/><tt:SimpleItem Name="Likelihood" Value="`...)
		dst = append(dst, conf...)
		dst = append(dst, `"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage></tt:Event></tt:MetadataStream>`...)
		return dst
	}
	dst = append(dst, `<tt:VideoAnalytics><tt:Frame UtcTime="`...)
	dst = append(dst, utc...)
	dst = append(dst, `">`...)
	for i := range count {
		dst = append(dst, `<tt:Object ObjectId="`...)
		switch {
		case e.TrackID == "":
			dst = strconv.AppendInt(dst, int64(i+1), 10)
		case i == 0:
			dst = appendXMLText(dst, e.TrackID)
		default:
			dst = appendXMLText(dst, e.TrackID)
			dst = append(dst, '.')
			dst = strconv.AppendInt(dst, int64(i), 10)
		}
		dst = append(dst, `"><tt:Appearance><tt:Shape><tt:BoundingBox left="0.1" top="0.1" right="0.2" bottom="0.3"/></tt:Shape><tt:Class><tt:Type Likelihood="`...)
		dst = append(dst, conf...)
		dst = append(dst, `">`...)
		dst = append(dst, onvifClass[e.Object]...)
		dst = append(dst, `</tt:Type></tt:Class>`...)
		if i == 0 && e.Plate != "" {
			dst = append(dst, `<tt:LicensePlateInfo><tt:PlateNumber Likelihood="`...)
			dst = append(dst, conf...)
			dst = append(dst, `">`...)
			dst = appendXMLText(dst, e.Plate)
			dst = append(dst, `</tt:PlateNumber>`...)
			if e.PlateColor != "" {
				dst = append(dst, `<tt:PlateColor>`...)
				dst = append(dst, e.PlateColor...)
				dst = append(dst, `</tt:PlateColor>`...)
			}
			dst = append(dst, `</tt:LicensePlateInfo>`...)
		}
		dst = append(dst, `</tt:Appearance></tt:Object>`...)
	}
	return append(dst, `</tt:Frame></tt:VideoAnalytics></tt:MetadataStream>`...)
}

func appendXMLText(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '<':
			dst = append(dst, "&lt;"...)
		case '>':
			dst = append(dst, "&gt;"...)
		case '&':
			dst = append(dst, "&amp;"...)
		case '"':
			dst = append(dst, "&quot;"...)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
