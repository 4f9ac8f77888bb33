package kafkaio

import (
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// PublishedHeader is the header of a record on the events topic that holds
// when its raw message was published (the raw record's timestamp: the
// device's producer time, or the broker's append time on a topic so
// configured), in Unix milliseconds as decimal text. The record's own
// timestamp is when ingest accepted it. Between the two the message waited
// in Kafka for ingest; the rules' restart replay tells by it an event that
// waited upstream, for which the live watermark held, from one a device
// sent late (see rules.Role).
const PublishedHeader = "published_ms"

// AppendPublished appends t as the value of PublishedHeader to dst.
func AppendPublished(dst []byte, t time.Time) []byte {
	return strconv.AppendInt(dst, t.UnixMilli(), 10)
}

// Published returns the time of m's PublishedHeader; false when m has none
// or it does not parse (a record written before the header existed).
func Published(m *kafka.Message) (time.Time, bool) {
	for i := range m.Headers {
		h := &m.Headers[i]
		if h.Key != PublishedHeader {
			continue
		}
		v := h.Value
		if len(v) == 0 || len(v) > 18 {
			return time.Time{}, false
		}
		var ms int64
		for _, c := range v {
			if c < '0' || c > '9' {
				return time.Time{}, false
			}
			ms = ms*10 + int64(c-'0')
		}
		return time.UnixMilli(ms), true
	}
	return time.Time{}, false
}
