package event

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// Rejected is one message of the DLQ topic (CONTRACT.md section 5). Payload
// must already have been through RedactPersonal, and Error must come from
// this package's *Error (which never quotes personal fields) or be free of
// personal data in the same way.
type Rejected struct {
	Topic      string
	Partition  int
	Offset     int64
	Key        []byte // the original message key; nil when it had none
	Error      string
	Code       Code
	ReceivedAt time.Time
	Payload    []byte
}

// AppendRejectedJSON appends r as one JSON object to dst:
// {"topic","partition","offset","key","error","code","received_at","payload"}.
// key is a JSON string when the key is valid UTF-8, null when there is no
// key, and otherwise replaced by "key_base64" (standard base64); payload is
// standard base64; received_at is RFC 3339 in UTC with milliseconds.
func AppendRejectedJSON(dst []byte, r *Rejected) []byte {
	dst = append(dst, `{"topic":`...)
	dst = appendString(dst, r.Topic)
	dst = append(dst, `,"partition":`...)
	dst = strconv.AppendInt(dst, int64(r.Partition), 10)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendInt(dst, r.Offset, 10)
	switch {
	case r.Key == nil:
		dst = append(dst, `,"key":null`...)
	case utf8.Valid(r.Key):
		dst = append(dst, `,"key":`...)
		dst = appendString(dst, string(r.Key))
	default:
		dst = append(dst, `,"key_base64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, r.Key)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"error":`...)
	dst = appendString(dst, r.Error)
	dst = append(dst, `,"code":`...)
	dst = appendString(dst, string(r.Code))
	dst = append(dst, `,"received_at":"`...)
	dst = appendTimeMilli(dst, r.ReceivedAt.UTC())
	dst = append(dst, `","payload":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, r.Payload)
	return append(dst, `"}`...)
}

// appendTimeMilli appends t in RFC 3339 with exactly millisecond precision.
func appendTimeMilli(dst []byte, t time.Time) []byte {
	return appendTime(dst, t.Truncate(time.Millisecond))
}

// rejectedJSON is the wire form of Rejected for DecodeRejected.
type rejectedJSON struct {
	Topic      *string          `json:"topic"`
	Partition  int              `json:"partition"`
	Offset     int64            `json:"offset"`
	Key        *json.RawMessage `json:"key"`
	KeyBase64  *string          `json:"key_base64"`
	Error      string           `json:"error"`
	Code       Code             `json:"code"`
	ReceivedAt string           `json:"received_at"`
	Payload    string           `json:"payload"`
}

// DecodeRejected decodes a DLQ record written by AppendRejectedJSON into r,
// overwriting all of it. It is not on a hot path and allocates freely.
func DecodeRejected(data []byte, r *Rejected) error {
	var w rejectedJSON
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("cannot decode rejected record: %w", err)
	}
	if w.Topic == nil {
		return fmt.Errorf("cannot decode rejected record: %w", missingField("topic"))
	}
	*r = Rejected{
		Topic:     *w.Topic,
		Partition: w.Partition,
		Offset:    w.Offset,
		Error:     w.Error,
		Code:      w.Code,
	}
	switch {
	case w.KeyBase64 != nil:
		k, err := base64.StdEncoding.DecodeString(*w.KeyBase64)
		if err != nil {
			return fmt.Errorf("cannot decode rejected record key_base64: %w", err)
		}
		r.Key = k
	case w.Key != nil && string(*w.Key) != "null":
		var k string
		if err := json.Unmarshal(*w.Key, &k); err != nil {
			return fmt.Errorf("cannot decode rejected record key: %w", err)
		}
		r.Key = []byte(k)
	}
	if w.ReceivedAt != "" {
		t, err := time.Parse(time.RFC3339Nano, w.ReceivedAt)
		if err != nil {
			return fmt.Errorf("cannot decode rejected record received_at: %w", err)
		}
		r.ReceivedAt = t.UTC()
	}
	p, err := base64.StdEncoding.DecodeString(w.Payload)
	if err != nil {
		return fmt.Errorf("cannot decode rejected record payload: %w", err)
	}
	r.Payload = p
	return nil
}
