package rtp

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func docSeeds(f *testing.F) [][]byte {
	f.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "onvif", "*.xml"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed documents: %v", err)
	}
	var out [][]byte
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// FuzzParseDocument: any input gives an error or a document whose values
// are in the contract's ranges; never a panic.
func FuzzParseDocument(f *testing.F) {
	for _, b := range docSeeds(f) {
		f.Add(b)
	}
	f.Add([]byte(`<tt:MetadataStream><![CDATA[x]]></tt:MetadataStream>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Document
		if err := d.Parse(b); err != nil {
			return
		}
		if len(d.Objects) > maxObjects || len(d.Notifications) > maxNotifications {
			t.Fatalf("limits exceeded: %d objects, %d notifications", len(d.Objects), len(d.Notifications))
		}
		for _, o := range d.Objects {
			switch o.Class {
			case "person", "vehicle", "face", "non_motor":
			default:
				t.Fatalf("class %q", o.Class)
			}
			if o.Likelihood < 0 || o.Likelihood > 1 {
				t.Fatalf("likelihood %v", o.Likelihood)
			}
		}
		for _, n := range d.Notifications {
			if n.Behavior == "" || n.Count < 1 || n.Likelihood < 0 || n.Likelihood > 1 {
				t.Fatalf("notification %+v", n)
			}
		}
	})
}

// packetStream encodes packets as a fuzz input: 2-byte length, packet.
func packetStream(pkts [][]byte) []byte {
	var out []byte
	for _, p := range pkts {
		out = binary.BigEndian.AppendUint16(out, uint16(len(p)))
		out = append(out, p...)
	}
	return out
}

// FuzzPackets feeds a run of datagrams (RTP parse, statistics, reorder
// buffer, reassembly, document parse) of two cameras to one receiver
// whose buffer budget holds one document: no panic, and the memory of a
// stream and of all stay within their limits.
func FuzzPackets(f *testing.F) {
	const other = "cam-b-00002"
	for _, b := range docSeeds(f) {
		p := &Packetizer{SSRC: SSRC(camID), Seq: 65534, MaxSize: 200}
		pkts := packets(p, b, 42)
		f.Add(packetStream(pkts))
		// Reordered and with a duplicate.
		if len(pkts) > 3 {
			pkts[1], pkts[2] = pkts[2], pkts[1]
			f.Add(packetStream(append(pkts, pkts[0])))
		}
		// Interleaved with another camera's, some held behind a gap.
		q := packets(&Packetizer{SSRC: SSRC(other), Seq: 10, MaxSize: 300}, b, 7)
		var mixed [][]byte
		for i := range max(len(pkts), len(q)) {
			if i < len(q) && i != 1 {
				mixed = append(mixed, q[i])
			}
			if i < len(pkts) {
				mixed = append(mixed, pkts[i])
			}
		}
		if len(q) > 1 {
			mixed = append(mixed, q[1])
		}
		f.Add(packetStream(mixed))
	}
	f.Add(packetStream([][]byte{{0x80, 0x60, 0, 1}}))
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 4096
		r, _ := newReceiverOf(t, Config{MaxDocumentBytes: 1500 + limit, MaxBufferBytes: 1500 + limit}, camID, other)
		w := r.newWorker()
		now := t0
		for len(in) >= 2 {
			n := int(binary.BigEndian.Uint16(in))
			in = in[2:]
			if n > len(in) {
				n = len(in)
			}
			w.handle(in[:n], now)
			in = in[n:]
			now = now.Add(7 * time.Millisecond)
		}
		r.checkAll(now.Add(time.Minute), now)
		var reserved int64
		for i := range r.shards {
			for _, st := range r.shards[i].streams {
				if len(st.data) > 1500+limit || st.docPackets > maxFragments || st.heldLive > reorderSlots*datagramSize {
					t.Fatalf("stream holds %d bytes in %d fragments, %d held", len(st.data), st.docPackets, st.heldLive)
				}
				if c := int64(cap(st.data) + cap(st.heldData)); c != st.reserved {
					t.Fatalf("stream reserved %d for %d bytes of buffers", st.reserved, c)
				}
				reserved += st.reserved
			}
		}
		if b := r.bufBytes.Load(); b != reserved || b > int64(r.cfg.MaxBufferBytes) {
			t.Fatalf("buffered %d bytes, streams reserved %d, budget %d", b, reserved, r.cfg.MaxBufferBytes)
		}
	})
}
