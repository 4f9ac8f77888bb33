package rtp

import "encoding/binary"

// MaxPacketSize is the largest RTP packet a Packetizer makes by default:
// below the Ethernet MTU with room for IP and UDP headers and tunnels.
const MaxPacketSize = 1200

// Packetizer splits metadata documents into RTP packets the way a camera
// sends them: consecutive sequence numbers, one RTP timestamp per
// document, the marker bit on its last packet. Senders (simulators, the
// load tool) use it; the gateway only receives.
type Packetizer struct {
	SSRC        uint32
	Seq         uint16 // sequence number of the next packet
	PayloadType uint8  // dynamic payload type; 0 means 107
	MaxSize     int    // largest packet; 0 means MaxPacketSize
}

// Packetize appends the packets of doc, with RTP timestamp ts, to buf and
// calls each with every packet (a sub-slice of the returned buffer, valid
// until buf is reused).
func (p *Packetizer) Packetize(buf, doc []byte, ts uint32, each func(pkt []byte)) []byte {
	const header = 12
	size := p.MaxSize
	if size <= header {
		size = MaxPacketSize
	}
	pt := p.PayloadType
	if pt == 0 {
		pt = 107
	}
	buf = buf[:0]
	for first := true; first || len(doc) > 0; first = false {
		n := min(len(doc), size-header)
		start := len(buf)
		b1 := pt & 0x7f
		if n == len(doc) {
			b1 |= 0x80 // marker: last packet of the document
		}
		buf = append(buf, 0x80, b1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint16(buf[start+2:], p.Seq)
		binary.BigEndian.PutUint32(buf[start+4:], ts)
		binary.BigEndian.PutUint32(buf[start+8:], p.SSRC)
		buf = append(buf, doc[:n]...)
		doc = doc[n:]
		p.Seq++
		each(buf[start:])
	}
	return buf
}
