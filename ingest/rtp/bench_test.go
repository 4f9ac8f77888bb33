package rtp

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"citywatch/event"
)

// BenchmarkPacket is the per-packet path: RTP header parse, SSRC lookup,
// RFC 3550 statistics and adding the payload to the document being
// reassembled (no packet completes a document).
func BenchmarkPacket(b *testing.B) {
	r, _ := newTestReceiver(b, Config{MaxDocumentBytes: 1 << 30})
	w := r.newWorker()
	p := &Packetizer{SSRC: SSRC(camID), MaxSize: 1200}
	payload := make([]byte, 1100)
	for i := range payload {
		payload[i] = 'x'
	}
	pkts := packets(p, payload, 1)
	pkt := pkts[0]
	pkt[1] &^= 0x80 // no marker
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	now := t0
	for i := 0; b.Loop(); i++ {
		pkt[2], pkt[3] = byte(i>>8), byte(i)
		// A new document (timestamp) every 4 packets, as a 4.4 KB document.
		pkt[7] = byte(i / 4)
		w.handle(pkt, now)
	}
}

// BenchmarkParseDocument decodes one ONVIF document with six objects.
func BenchmarkParseDocument(b *testing.B) {
	doc := readDoc(b, "objects.xml")
	var d Document
	b.ReportAllocs()
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		if err := d.Parse(doc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDocumentPath is a two-packet document from datagram to
// emitted detections (per document).
func BenchmarkDocumentPath(b *testing.B) {
	r, err := New(Config{}, testRegistry(), func(*event.Event) bool { return true }, prometheus.NewRegistry(), discardLogger())
	if err != nil {
		b.Fatal(err)
	}
	w := r.newWorker()
	var buf []byte
	p := &Packetizer{SSRC: SSRC(camID), MaxSize: 1200}
	doc := readDoc(b, "objects.xml")
	var pkts [][]byte
	b.ReportAllocs()
	now := t0
	for i := 0; b.Loop(); i++ {
		pkts = pkts[:0]
		buf = p.Packetize(buf, doc, uint32(i)*3600, func(pk []byte) { pkts = append(pkts, pk) })
		for _, pk := range pkts {
			w.handle(pk, now)
		}
		now = now.Add(time.Millisecond)
	}
}
