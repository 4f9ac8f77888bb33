package gateway

import (
	"time"

	"citywatch/ingest/rtp"
)

func rtpConfig() rtp.Config {
	return rtp.Config{Addr: "127.0.0.1:0", Sockets: 2, CheckInterval: 50 * time.Millisecond}
}
