// Package rtp is the RTP half of citywatch's gateway (CONTRACT.md section
// 7): it receives analytics metadata that cameras stream over RTP/UDP,
// measures every stream per RFC 3550 (packets expected and lost, reordering,
// duplicates, interarrival jitter), reassembles the ONVIF tt:MetadataStream
// documents that span several packets, and turns their objects and events
// into camera.detection events. A stream that loses more than the
// configured share of its packets over a window, or stalls, yields a
// camera.health event (video_loss), and another (ok) when it recovers.
//
// It sits in front of Kafka: the gateway (package ingest/gateway) gives a
// Receiver an Emit func that encodes each event and queues it for the
// camera topic without blocking; what does not fit is dropped and counted
// there. Streams are keyed by SSRC, and SSRC maps to camera through the
// device registry by the deterministic function SSRC, which senders
// (simulators, real adapters) use too.
//
// Packets of a stream are put back in sequence order before reassembly
// (up to 64 packets ahead wait, for at most Config.ReorderWait), so that
// reordered packets lose nothing; what is lost or abandoned is counted in
// citywatch_rtp_documents_dropped_total by reason.
//
// Memory is bounded: each stream holds at most one document of at most
// Config.MaxDocumentBytes and 64 packets waiting for a gap, all streams
// together at most Config.MaxBufferBytes of such buffers, and there are at
// most Config.MaxStreams streams; a stream silent for Config.IdleTimeout,
// its stall reported, is forgotten. The packet path (header parse,
// statistics, reassembly of a fragment) does not allocate.
package rtp

import "citywatch/internal/city"

// SSRC returns the RTP synchronisation source identifier a camera uses
// when the city file gives it none (city.Device.SSRC): the 32-bit FNV-1a
// hash of its device id, which the gateway and every sender derive the
// same way.
func SSRC(deviceID string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(deviceID); i++ {
		h ^= uint32(deviceID[i])
		h *= 16777619
	}
	return h
}

// Camera is what the gateway knows of a camera from the registry.
type Camera struct {
	ID    string
	Class string // "A" or "B"
	Lat   float64
	Lon   float64
}

// Registry maps SSRC to camera. It is read-only once built and safe for
// concurrent use.
type Registry struct {
	bySSRC map[uint32]*Camera
	// Collisions counts the cameras left out because another camera's id
	// hashes to the same SSRC; their streams are treated as unknown.
	Collisions int
}

// SSRCOf returns the SSRC camera d streams with: the one the city file
// gives it, or SSRC of its id.
func SSRCOf(d *city.Device) uint32 {
	if d.SSRC != 0 {
		return d.SSRC
	}
	return SSRC(d.ID)
}

// SSRCs returns the SSRC of each device id for senders: SSRCOf for the
// cameras of c, SSRC of the id for any other id.
func SSRCs(c *city.City) func(deviceID string) uint32 {
	given := make(map[string]uint32)
	for _, d := range c.DevicesOf(city.KindCamera) {
		if d.SSRC != 0 {
			given[d.ID] = d.SSRC
		}
	}
	return func(id string) uint32 {
		if s, ok := given[id]; ok {
			return s
		}
		return SSRC(id)
	}
}

// NewRegistry builds the SSRC registry from the cameras of c. Two cameras
// whose ids share an SSRC are both left out (an ambiguous stream must not
// be attributed to the wrong camera) and counted in Collisions.
func NewRegistry(c *city.City) *Registry {
	r := &Registry{bySSRC: make(map[uint32]*Camera)}
	ambiguous := map[uint32]bool{}
	for _, d := range c.DevicesOf(city.KindCamera) {
		s := SSRCOf(d)
		if _, dup := r.bySSRC[s]; dup || ambiguous[s] {
			if !ambiguous[s] {
				r.Collisions++
			}
			ambiguous[s] = true
			delete(r.bySSRC, s)
			r.Collisions++
			continue
		}
		r.bySSRC[s] = &Camera{ID: d.ID, Class: d.Class, Lat: d.Lat, Lon: d.Lon}
	}
	return r
}

// Lookup returns the camera streaming with ssrc, or nil.
func (r *Registry) Lookup(ssrc uint32) *Camera { return r.bySSRC[ssrc] }

// Len returns the number of cameras in r.
func (r *Registry) Len() int { return len(r.bySSRC) }
