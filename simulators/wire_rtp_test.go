package simulators

import (
	"net"
	"slices"
	"testing"
	"time"

	pionrtp "github.com/pion/rtp"

	"citywatch/event"
	"citywatch/ingest/rtp"
	"citywatch/internal/city"
)

func TestAppendMetadataParses(t *testing.T) {
	tm := time.Date(2026, 11, 26, 8, 15, 30, 125e6, time.UTC)
	tests := []struct {
		e             event.Event
		objects       int
		notifications int
	}{
		{event.Event{Type: event.TypeCameraDetection, Time: tm, Object: "person", Count: 3, Confidence: 0.9, TrackID: "t1"}, 3, 0},
		{event.Event{Type: event.TypeCameraDetection, Time: tm, Object: "vehicle", Count: 1, Confidence: 0.8, Plate: "鄂F<12345>", PlateColor: "blue", TrackID: "t2"}, 1, 0},
		{event.Event{Type: event.TypeCameraDetection, Time: tm, Object: "person", Count: 2, Behavior: "fight", Confidence: 0.85}, 0, 1},
	}
	var d rtp.Document
	for _, tt := range tests {
		doc := AppendMetadata(nil, &tt.e)
		if err := d.Parse(doc); err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		if len(d.Objects) != tt.objects || len(d.Notifications) != tt.notifications {
			t.Fatalf("%+v %+v", d.Objects, d.Notifications)
		}
		if tt.objects > 0 {
			o := d.Objects[0]
			if o.Class != tt.e.Object || o.Plate != tt.e.Plate || o.PlateColor != tt.e.PlateColor || o.ID != tt.e.TrackID || !o.Time.Equal(tm) || o.Likelihood != tt.e.Confidence {
				t.Errorf("object %+v from %+v", o, tt.e)
			}
		}
		if tt.notifications > 0 {
			n := d.Notifications[0]
			if n.Behavior != tt.e.Behavior || n.Count != tt.e.Count || n.Object != tt.e.Object || n.Likelihood != tt.e.Confidence || !n.Time.Equal(tm) {
				t.Errorf("notification %+v from %+v", n, tt.e)
			}
		}
	}
}

func TestAppendMotorVehicle(t *testing.T) {
	e := event.Event{ID: "cp-1", Type: event.TypeCheckpointPass, DeviceID: "kk-003", Lane: 2, Plate: "鄂F12345", PlateColor: "yellow",
		VehicleType: "bus", SpeedKmh: 48.5, Confidence: 0.9, Time: time.Date(2026, 11, 26, 0, 15, 30, 7e6, time.UTC)}
	got := string(AppendMotorVehicle(nil, &e))
	want := `{"MotorVehicleID":"cp-1","TollgateID":"kk-003","DeviceID":"kk-003","PassTime":"20261126081530007","LaneNo":"2","PlateNo":"鄂F12345","HasPlate":"1","PlateColor":"6","PlateReliability":"90.0","Speed":"48.5","VehicleClass":"K11"}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestRTPSenderReorders(t *testing.T) {
	ln, s := rtpPair(t)
	s.Reorder = 1 // every other packet is held back and follows the next
	tm := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	for i := range 4 {
		e := event.Event{Type: event.TypeCameraDetection, DeviceID: "cam-1", Time: tm.Add(time.Duration(i) * time.Second), Object: "person", Count: 1, Confidence: 0.9}
		if err := s.Send(&e); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []uint16
	for _, p := range readRTP(t, ln, s.Packets) {
		seqs = append(seqs, p.SequenceNumber)
	}
	if s.Reordered == 0 || len(seqs) != 4 || seqs[1] != seqs[0]-1 || seqs[3] != seqs[2]-1 {
		t.Errorf("sequence numbers as received: %v (%d reordered), want each pair swapped", seqs, s.Reordered)
	}
}

// TestRTPSenderSSRC: a camera streams with the SSRC the city file gives
// it (rtp.SSRCs), another with the hash of its id.
func TestRTPSenderSSRC(t *testing.T) {
	ln, s := rtpPair(t)
	s.SSRCOf = rtp.SSRCs(&city.City{Devices: []city.Device{{ID: "cam-1", Kind: city.KindCamera, SSRC: 1234567890}}})
	tm := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	want := map[uint32]bool{1234567890: true, rtp.SSRC("cam-2"): true}
	for _, id := range []string{"cam-1", "cam-2"} {
		e := event.Event{Type: event.TypeCameraDetection, DeviceID: id, Time: tm, Object: "person", Count: 1, Confidence: 0.9}
		if err := s.Send(&e); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range readRTP(t, ln, s.Packets) {
		if !want[p.SSRC] {
			t.Errorf("SSRC %d, want one of %v", p.SSRC, want)
		}
		delete(want, p.SSRC)
	}
	if len(want) != 0 {
		t.Errorf("SSRCs not seen: %v", want)
	}
}

// rtpPair returns a loopback UDP socket and a sender to it, both closed
// when the test ends.
func rtpPair(t *testing.T) (*net.UDPConn, *RTPSender) {
	t.Helper()
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s, err := NewRTPSender(ln.LocalAddr().String(), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return ln, s
}

// readRTP reads n RTP packets from ln, in the order they arrive.
func readRTP(t *testing.T, ln *net.UDPConn, n uint64) []pionrtp.Packet {
	t.Helper()
	out := make([]pionrtp.Packet, n)
	buf := make([]byte, 2048)
	for i := range out {
		_ = ln.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, err := ln.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if err := out[i].Unmarshal(slices.Clone(buf[:k])); err != nil {
			t.Fatal(err)
		}
	}
	return out
}
