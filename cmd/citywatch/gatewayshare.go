package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"citywatch/ingest/gateway"
	"citywatch/ingest/rtp"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/simulators"
)

// Shares of the simulated devices that talk to the gateway rather than to
// Kafka in the demo: cameras that stream ONVIF metadata over RTP,
// checkpoints that push GA/T 1400 records.
const (
	rtpSharePct  = 10
	viidSharePct = 30
)

// startGatewayShare starts a gateway on loopback ports for the demo and
// returns the writer that routes the simulated devices' shares through it.
// The returned stop func stops the pusher and the gateway and waits.
func startGatewayShare(ctx context.Context, cfg Config, c *city.City, w simulators.Writer, reg prometheus.Registerer, km *kafkaio.Metrics, seed uint64, log *slog.Logger, out io.Writer) (simulators.Writer, func(), error) {
	gcfg := cfg.Gateway
	gcfg.HTTPAddr = "127.0.0.1:0"
	gcfg.RTP.Addr = "127.0.0.1:0"
	// GA/T 1400 times without an offset are CITYWATCH_TZ's, as in
	// citywatch gateway.
	loc, err := time.LoadLocation(cfg.Timezone)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot load time zone %q: %w", cfg.Timezone, err)
	}
	gcfg.Location = loc
	g, err := gateway.New(gcfg, cfg.Kafka, c, reg, km, log)
	if err != nil {
		return nil, nil, err
	}
	if err := g.Listen(ctx); err != nil {
		return nil, nil, err
	}
	share, err := simulators.NewGatewayShare(w, cfg.Kafka.TopicPrefix, g.RTPAddr().String(), "http://"+g.HTTPAddr().String(),
		rtpSharePct, viidSharePct, seed, log)
	if err != nil {
		return nil, nil, err
	}
	share.SetSSRCs(rtp.SSRCs(c))
	gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := g.Run(gctx); err != nil {
			log.Error("gateway stopped", "err", err)
		}
	})
	wg.Go(func() { _ = share.Run(gctx) })
	fmt.Fprintf(out, "gateway: RTP on %s (%d%% of cameras), GA/T 1400 on http://%s (%d%% of checkpoints); its metrics and stream reports at http://%[3]s/metrics and /rtp/streams\n",
		g.RTPAddr(), rtpSharePct, g.HTTPAddr(), viidSharePct)
	return share, func() {
		cancel()
		wg.Wait()
		share.Close()
	}, nil
}
