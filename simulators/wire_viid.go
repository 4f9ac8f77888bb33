package simulators

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"citywatch/event"
	"citywatch/ingest/viid"
	"citywatch/internal/city"
)

// VIIDClient pushes checkpoint passes to the gateway as a GA/T 1400
// checkpoint platform does: each checkpoint.pass becomes a
// MotorVehicleObject with TollgateID, and records go out in batches to
// POST /VIID/MotorVehicles. A 503 answer is retried after its Retry-After
// until the context ends. It is not safe for concurrent use.
type VIIDClient struct {
	// BaseURL is the gateway's HTTP address ("http://host:8090").
	BaseURL string
	// Batch is how many records one request carries.
	Batch int
	// DeviceID identifies the platform (User-Identify header) and
	// Username and Password, when set, are its Digest credentials for
	// Register; Username defaults to DeviceID, for a receiver that gives
	// each device an account of its own (gateway.viid.device_id_is_username).
	DeviceID, Username, Password string
	// OnStatus, when set, is called with each record's answer: the
	// MotorVehicleID and its StatusCode (0: written to Kafka).
	OnStatus func(id string, code int)
	HTTP     *http.Client

	pending []json.RawMessage
	ids     []string
	// Sent counts the records acknowledged, Busy the 503 answers.
	Sent, Busy uint64
}

// NewVIIDClient returns a client of the gateway at baseURL sending batch
// records per request.
func NewVIIDClient(baseURL string, batch int) *VIIDClient {
	return &VIIDClient{BaseURL: baseURL, Batch: max(batch, 1), DeviceID: "42060000005030000001", HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// Register registers the platform with HTTP Digest authentication.
func (c *VIIDClient) Register(ctx context.Context) error {
	body := []byte(`{"RegisterObject":{"DeviceID":"` + c.DeviceID + `"}}`)
	resp, err := c.post(ctx, viid.PathRegister, body, "")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	ch, err := viid.ParseChallenge(resp.Header.Get("WWW-Authenticate"))
	if resp.StatusCode != http.StatusUnauthorized || err != nil {
		return fmt.Errorf("cannot register: HTTP %d", resp.StatusCode)
	}
	const nc, cnonce = "00000001", "0a4f113b"
	user := c.Username
	if user == "" {
		user = c.DeviceID
	}
	r := viid.DigestResponse(user, ch["realm"], c.Password, "POST", viid.PathRegister, ch["nonce"], nc, cnonce, "auth")
	auth := fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", algorithm=MD5, qop=auth, nc=%s, cnonce="%s", response="%s"`,
		user, ch["realm"], ch["nonce"], viid.PathRegister, nc, cnonce, r)
	resp, err = c.post(ctx, viid.PathRegister, body, auth)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cannot register: HTTP %d", resp.StatusCode)
	}
	return nil
}

// Add queues one checkpoint.pass (other types are ignored) and sends the
// batch when it is full.
func (c *VIIDClient) Add(ctx context.Context, e *event.Event) error {
	if e.Type != event.TypeCheckpointPass {
		return nil
	}
	c.pending = append(c.pending, AppendMotorVehicle(nil, e))
	c.ids = append(c.ids, e.ID)
	if len(c.pending) >= c.Batch {
		return c.Flush(ctx)
	}
	return nil
}

// Flush sends the queued records, retrying 503 answers after their
// Retry-After until ctx ends.
func (c *VIIDClient) Flush(ctx context.Context) error {
	if len(c.pending) == 0 {
		return nil
	}
	var body bytes.Buffer
	body.WriteString(`{"MotorVehicleListObject":{"MotorVehicleObject":[`)
	for i, r := range c.pending {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(r)
	}
	body.WriteString(`]}}`)
	for {
		resp, err := c.post(ctx, viid.PathMotorVehicles, body.Bytes(), "")
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			c.Busy++
			wait := time.Second
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
				wait = time.Duration(s) * time.Second
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			continue
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("cannot push records: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
		}
		var a struct {
			ResponseStatusListObject struct {
				ResponseStatusObject []struct {
					ID         string `json:"Id"`
					StatusCode int
				}
			}
		}
		if err := json.Unmarshal(b, &a); err != nil {
			return fmt.Errorf("cannot read answer: %w", err)
		}
		for _, s := range a.ResponseStatusListObject.ResponseStatusObject {
			if s.StatusCode == 0 {
				c.Sent++
			}
			if c.OnStatus != nil {
				c.OnStatus(s.ID, s.StatusCode)
			}
		}
		c.pending, c.ids = c.pending[:0], c.ids[:0]
		return nil
	}
}

func (c *VIIDClient) post(ctx context.Context, path string, body []byte, auth string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("cannot make request: %w", err)
	}
	req.Header.Set("Content-Type", "application/VIID+JSON;charset=UTF-8")
	req.Header.Set("User-Identify", c.DeviceID)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, errors.Join(ctx.Err(), err)
		}
		return nil, fmt.Errorf("cannot reach gateway: %w", err)
	}
	return resp, nil
}

// gaPlateColor and gaVehicleClass are the GA/T 1400 codes the client
// writes (docs/contract-notes.md, "GA/T 1400 and RTP").
var (
	gaPlateColor   = map[string]string{"black": "1", "white": "2", "blue": "5", "yellow": "6", "green": "9"}
	gaVehicleClass = map[string]string{"car": "K33", "suv": "K32", "van": "K34", "truck": "H11", "bus": "K11", "motorcycle": "M11", "other": "X99"}
)

// AppendMotorVehicle appends the MotorVehicleObject of a checkpoint.pass
// as real platforms send it: numbers as strings, PassTime as
// yyyyMMddHHmmssSSS in China Standard Time without offset, codes for plate
// colour and vehicle class, PlateReliability 0–100.
func AppendMotorVehicle(dst []byte, e *event.Event) []byte {
	dst = append(dst, `{"MotorVehicleID":`...)
	dst = appendQuoted(dst, e.ID)
	dst = append(dst, `,"TollgateID":`...)
	dst = appendQuoted(dst, e.DeviceID)
	dst = append(dst, `,"DeviceID":`...)
	dst = appendQuoted(dst, e.DeviceID)
	dst = append(dst, `,"PassTime":"`...)
	t := e.Time.In(city.Location)
	dst = t.AppendFormat(dst, "20060102150405")
	ms := t.Nanosecond() / 1e6
	dst = append(dst, byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	dst = append(dst, `","LaneNo":"`...)
	dst = strconv.AppendInt(dst, int64(e.Lane), 10)
	dst = append(dst, `","PlateNo":`...)
	if e.Plate == "" {
		dst = append(dst, `"未识别","HasPlate":"0"`...)
	} else {
		dst = appendQuoted(dst, e.Plate)
		dst = append(dst, `,"HasPlate":"1","PlateColor":"`...)
		dst = append(dst, gaPlateColor[e.PlateColor]...)
		dst = append(dst, '"')
		dst = append(dst, `,"PlateReliability":"`...)
		dst = strconv.AppendFloat(dst, e.Confidence*100, 'f', 1, 64)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"Speed":"`...)
	dst = strconv.AppendFloat(dst, e.SpeedKmh, 'f', 1, 64)
	dst = append(dst, `","VehicleClass":"`...)
	vc, ok := gaVehicleClass[e.VehicleType]
	if !ok {
		vc = "X99"
	}
	dst = append(dst, vc...)
	dst = append(dst, '"')
	if e.VehicleColor != "" {
		dst = append(dst, `,"VehicleColor":`...)
		dst = appendQuoted(dst, e.VehicleColor)
	}
	return append(dst, '}')
}
