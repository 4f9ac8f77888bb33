package simulators

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/ingest/rtp"
)

// GatewayShare is a Writer that sends the detections of a share of the
// cameras over RTP and the passes of a share of the checkpoints as GA/T
// 1400 records to a gateway, as a city's mix of devices does, and writes
// every other message to the next Writer. A device is in a share by its
// SSRC (rtp.SSRC of its id), so it stays on one path for the whole run.
//
// Run pushes the queued GA/T 1400 records; the queue between
// WriteMessages and Run is bounded and WriteMessages waits when it is full
// (passes must arrive). RTP has no retry: a detection the socket refuses
// is counted in RTPErrors.
type GatewayShare struct {
	next                 Writer
	cameraTopic, ckTopic string
	rtpPct, viidPct      uint32
	rtp                  *RTPSender
	viid                 *VIIDClient
	queue                chan event.Event
	log                  *slog.Logger
	dec                  event.Decoder
	ev                   event.Event
	keep                 []kafka.Message
	// newest is the newest event time sent over RTP, and beat the last
	// time keepalive frames went out (see RTPSender.Keepalive).
	newest, beat time.Time
	// RTPSent, VIIDQueued and RTPErrors count what went to the gateway.
	RTPSent, VIIDQueued, RTPErrors uint64
}

// NewGatewayShare returns a share writing through the gateway at rtpAddr
// (host:port, UDP) and viidURL (http://host:port) for rtpPct per cent of
// the cameras and viidPct per cent of the checkpoints; topics are named
// with prefix. Close it after Run has returned.
func NewGatewayShare(next Writer, prefix, rtpAddr, viidURL string, rtpPct, viidPct uint32, seed uint64, log *slog.Logger) (*GatewayShare, error) {
	if rtpPct > 100 || viidPct > 100 {
		return nil, fmt.Errorf("cannot share devices: shares are per cent, got %d and %d", rtpPct, viidPct)
	}
	snd, err := NewRTPSender(rtpAddr, seed)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &GatewayShare{
		next: next, cameraTopic: prefix + "camera", ckTopic: prefix + "checkpoint",
		rtpPct: rtpPct, viidPct: viidPct, rtp: snd, viid: NewVIIDClient(viidURL, 100),
		queue: make(chan event.Event, 4096), log: log,
	}, nil
}

// SetRTPFaults makes the RTP share lose and reorder packets at these
// shares (per packet), as a lossy network would.
func (g *GatewayShare) SetRTPFaults(loss, reorder float64) { g.rtp.Loss, g.rtp.Reorder = loss, reorder }

// SetSSRCs makes the RTP share stream with the SSRCs f gives (rtp.SSRCs
// of the city file), rather than the hash of each camera's id.
func (g *GatewayShare) SetSSRCs(f func(deviceID string) uint32) { g.rtp.SSRCOf = f }

// Close closes the RTP socket.
func (g *GatewayShare) Close() error { return g.rtp.Close() }

// Run sends the queued passes in batches, at least every 200 ms, until
// ctx is done.
func (g *GatewayShare) Run(ctx context.Context) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-g.queue:
			if err := g.viid.Add(ctx, &e); err != nil && ctx.Err() == nil {
				g.log.Warn("cannot push GA/T 1400 records to the gateway", "err", err)
			}
		case <-t.C:
			if err := g.viid.Flush(ctx); err != nil && ctx.Err() == nil {
				g.log.Warn("cannot push GA/T 1400 records to the gateway", "err", err)
			}
		}
	}
}

var (
	typeDetection = []byte(`"type":"camera.detection"`)
	typePass      = []byte(`"type":"checkpoint.pass"`)
)

// WriteMessages implements Writer. It is not safe for concurrent use.
func (g *GatewayShare) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	keep := g.keep[:0]
	for i := range msgs {
		if !g.divert(ctx, &msgs[i]) {
			keep = append(keep, msgs[i])
		}
	}
	g.keep = keep[:0]
	g.Tick(g.newest)
	if len(keep) == 0 {
		return nil
	}
	return g.next.WriteMessages(ctx, keep...)
}

// Tick tells the share that the simulation has reached now (event time):
// the RTP streams get their empty frames up to it even when no detection
// came along (see RTPSender.Keepalive). The simulation's driver calls it
// every step; WriteMessages calls it with the newest detection's time.
// It is not safe for concurrent use with WriteMessages.
func (g *GatewayShare) Tick(now time.Time) {
	if now.After(g.newest) {
		g.newest = now
	}
	if g.newest.Sub(g.beat) < KeepaliveEvery {
		return
	}
	g.beat = g.newest
	if err := g.rtp.Keepalive(g.newest); err != nil {
		g.RTPErrors++
	}
}

// divert sends m through the gateway when its device is in a share and
// reports whether it did.
func (g *GatewayShare) divert(ctx context.Context, m *kafka.Message) bool {
	var pct uint32
	switch m.Topic {
	case g.cameraTopic:
		if !bytes.Contains(m.Value, typeDetection) {
			return false
		}
		pct = g.rtpPct
	case g.ckTopic:
		if !bytes.Contains(m.Value, typePass) {
			return false
		}
		pct = g.viidPct
	default:
		return false
	}
	if rtp.SSRC(string(m.Key))%100 >= pct {
		return false
	}
	if err := g.dec.Decode(m.Value, &g.ev); err != nil {
		return false // planted bad input goes to Kafka as it is
	}
	if g.ev.Type == event.TypeCameraDetection {
		if err := g.rtp.Send(&g.ev); err != nil {
			g.RTPErrors++
			return false
		}
		if g.ev.Time.After(g.newest) {
			g.newest = g.ev.Time
		}
		g.RTPSent++
		return true
	}
	select {
	case g.queue <- g.ev:
		g.VIIDQueued++
		return true
	case <-ctx.Done():
		return false
	}
}
