package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/ingest/gateway"
	"citywatch/ingest/rtp"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/simulators"
)

// Shares of the simulated devices that talk to the gateway rather than to
// Kafka, as a city's mix of devices does: cameras that stream ONVIF
// metadata over RTP, checkpoints that push GA/T 1400 records. A device is
// in a share by its SSRC, so it stays on one path for the whole run.
const (
	rtpSharePct  = 10
	viidSharePct = 30
)

// viaGateway is a simulators.Writer that sends the detections of the RTP
// share of cameras and the passes of the GA/T 1400 share of checkpoints
// through the gateway and writes every other message to Kafka.
type viaGateway struct {
	w      simulators.Writer
	prefix string
	rtp    *simulators.RTPSender
	viid   chan event.Event // to the GA/T 1400 pusher; blocks when full: passes must arrive
	dec    event.Decoder
	ev     event.Event
	keep   []kafka.Message
}

// startGatewayShare starts a gateway on loopback ports for the demo and
// returns the writer that routes the simulated devices' shares through it.
// The returned stop func stops the pusher and the gateway and waits.
func startGatewayShare(ctx context.Context, cfg Config, c *city.City, w simulators.Writer, reg prometheus.Registerer, km *kafkaio.Metrics, seed uint64, log *slog.Logger, out io.Writer) (simulators.Writer, func(), error) {
	gcfg := cfg.Gateway
	gcfg.HTTPAddr = "127.0.0.1:0"
	gcfg.RTP.Addr = "127.0.0.1:0"
	g, err := gateway.New(gcfg, cfg.Kafka, c, reg, km, log)
	if err != nil {
		return nil, nil, err
	}
	if err := g.Listen(ctx); err != nil {
		return nil, nil, err
	}
	gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := g.Run(gctx); err != nil {
			log.Error("gateway stopped", "err", err)
		}
	}()
	snd, err := simulators.NewRTPSender(g.RTPAddr().String(), seed)
	if err != nil {
		cancel()
		wg.Wait()
		return nil, nil, err
	}
	vg := &viaGateway{w: w, prefix: cfg.Kafka.TopicPrefix, rtp: snd, viid: make(chan event.Event, 4096)}
	vc := simulators.NewVIIDClient("http://"+g.HTTPAddr().String(), 100)
	wg.Add(1)
	go func() {
		defer wg.Done()
		pushVIID(gctx, vc, vg.viid, log)
	}()
	fmt.Fprintf(out, "gateway: RTP on %s (%d%% of cameras), GA/T 1400 on http://%s (%d%% of checkpoints)\n",
		g.RTPAddr(), rtpSharePct, g.HTTPAddr(), viidSharePct)
	return vg, func() {
		cancel()
		wg.Wait()
		snd.Close()
	}, nil
}

// pushVIID sends the queued passes in batches, at least every 200 ms.
func pushVIID(ctx context.Context, vc *simulators.VIIDClient, in <-chan event.Event, log *slog.Logger) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-in:
			if err := vc.Add(ctx, &e); err != nil && ctx.Err() == nil {
				log.Warn("cannot push GA/T 1400 records to the gateway", "err", err)
			}
		case <-t.C:
			if err := vc.Flush(ctx); err != nil && ctx.Err() == nil {
				log.Warn("cannot push GA/T 1400 records to the gateway", "err", err)
			}
		}
	}
}

var (
	typeDetection = []byte(`"type":"camera.detection"`)
	typePass      = []byte(`"type":"checkpoint.pass"`)
)

// WriteMessages implements simulators.Writer.
func (v *viaGateway) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	keep := v.keep[:0]
	for i := range msgs {
		m := &msgs[i]
		if !v.divert(ctx, m) {
			keep = append(keep, *m)
		}
	}
	v.keep = keep[:0]
	if len(keep) == 0 {
		return nil
	}
	return v.w.WriteMessages(ctx, keep...)
}

// divert sends m through the gateway when its device is in a share and
// reports whether it did.
func (v *viaGateway) divert(ctx context.Context, m *kafka.Message) bool {
	var pct uint32
	switch m.Topic {
	case v.prefix + kafkaio.TopicCamera:
		if !bytes.Contains(m.Value, typeDetection) {
			return false
		}
		pct = rtpSharePct
	case v.prefix + kafkaio.TopicCheckpoint:
		if !bytes.Contains(m.Value, typePass) {
			return false
		}
		pct = viidSharePct
	default:
		return false
	}
	if rtp.SSRC(string(m.Key))%100 >= pct {
		return false
	}
	if err := v.dec.Decode(m.Value, &v.ev); err != nil {
		return false // the simulators' planted bad input goes to Kafka as it is
	}
	if v.ev.Type == event.TypeCameraDetection {
		return v.rtp.Send(&v.ev) == nil
	}
	select {
	case v.viid <- v.ev:
		return true
	case <-ctx.Done():
		return false
	}
}
