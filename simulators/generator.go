// Package simulators stands in for citywatch's field devices. This file
// holds the simple stream generator used by the demo and the ingest tests:
// it produces messages of every event type of the wire contract, with a
// chosen share of bad input, resent duplicates and late (out-of-order)
// events, each labelled with what citywatch must do with it. The city model
// with its real-scale device registry and planted incidents builds on it.
package simulators

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"citywatch/event"
)

// Want is what citywatch must do with a generated message.
type Want uint8

// The outcomes a generated message expects.
const (
	// WantEvent: a valid event, stored exactly once.
	WantEvent Want = iota
	// WantReject: bad input, sent to the DLQ with a reason.
	WantReject
	// WantDuplicate: a resend of an earlier event (same id), counted once.
	WantDuplicate
)

// Message is one generated device message.
type Message struct {
	Topic string // short topic name ("camera", "fuel", …)
	Key   []byte
	Value []byte
	Want  Want
	ID    string // the event id, for WantEvent and WantDuplicate
	Type  string // the event type, for WantEvent and WantDuplicate
	// BuyerID and BuyerName are the personal data a fuel purchase carried,
	// so that tests can check they never appear downstream.
	BuyerID, BuyerName string
}

// GeneratorConfig sets the mix of a Generator's stream.
type GeneratorConfig struct {
	Seed      uint64
	BadShare  float64 // share of bad messages
	DupShare  float64 // share of resends of an earlier event
	LateShare float64 // share of valid events up to 10 minutes late
	// Now is the clock for event times; nil means time.Now.
	Now func() time.Time
}

// Generator produces a labelled stream of device messages. It is not safe
// for concurrent use.
type Generator struct {
	cfg    GeneratorConfig
	rng    *rand.Rand
	seq    uint64
	recent []Message // ring of recent valid messages, for resends
	next   int
}

// NewGenerator returns a generator with cfg's mix.
func NewGenerator(cfg GeneratorConfig) *Generator {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Generator{
		cfg:    cfg,
		rng:    rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		recent: make([]Message, 0, 256),
	}
}

// Xiangyang's urban core, for coordinates.
const (
	baseLat = 32.01
	baseLon = 112.12
)

var (
	cameraObjects   = []string{"person", "vehicle", "non_motor", "face"}
	behaviors       = []string{"loitering", "intrusion", "fight", "fall", "crowd", "smoke_fire", "wrong_way"}
	healthStatuses  = []string{"ok", "video_loss", "tamper", "blur", "offline"}
	plateColors     = []string{"blue", "yellow", "green", "white", "black"}
	vehicleTypes    = []string{"car", "suv", "van", "truck", "bus", "motorcycle", "other"}
	fuels           = []string{"92", "95", "98", "diesel"}
	patrolStatuses  = []string{"available", "busy", "off_duty"}
	dispatchAnswers = []string{"accepted", "declined", "en_route", "on_scene", "cleared"}
	surnames        = []string{"张", "王", "李", "赵", "刘", "陈", "杨", "黄", "周", "吴"}
	givenNames      = []string{"伟", "芳", "娜", "敏", "静", "强", "磊", "军", "洋", "勇"}
	plateLetters    = "ABCDEFGHJKLMNPQRSTUVWXYZ"
	plateChars      = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
	// Xiangyang's county-level codes, for ID numbers of local residents.
	areaCodes = []string{"420602", "420606", "420607", "420624", "420625", "420626", "420682", "420683", "420684"}
)

// Next returns the next message of the stream.
func (g *Generator) Next() Message {
	r := g.rng.Float64()
	switch {
	case r < g.cfg.BadShare:
		return g.bad()
	case r < g.cfg.BadShare+g.cfg.DupShare && len(g.recent) > 0:
		m := g.recent[g.rng.IntN(len(g.recent))]
		m.Want = WantDuplicate
		return m
	}
	m := g.valid()
	if len(g.recent) < cap(g.recent) {
		g.recent = append(g.recent, m)
	} else {
		g.recent[g.next] = m
		g.next = (g.next + 1) % len(g.recent)
	}
	return m
}

func (g *Generator) pick(xs []string) string { return xs[g.rng.IntN(len(xs))] }

func (g *Generator) eventTime() time.Time {
	t := g.cfg.Now()
	if g.rng.Float64() < g.cfg.LateShare {
		t = t.Add(-time.Duration(g.rng.Int64N(int64(10 * time.Minute))))
	}
	return t.In(shanghai)
}

var shanghai = time.FixedZone("CST", 8*3600)

// Plate returns a random plate in normal form: mostly 鄂F, some other
// provinces, a share of 8-character new-energy plates.
func (g *Generator) Plate() string {
	prov, letter := "鄂", "F"
	switch x := g.rng.Float64(); {
	case x < 0.15:
		prov, letter = "鄂", string(plateLetters[g.rng.IntN(len(plateLetters))])
	case x < 0.25:
		prov, letter = g.pick([]string{"豫", "陕", "渝", "湘", "川", "京", "粤"}), string(plateLetters[g.rng.IntN(len(plateLetters))])
	}
	n := 5
	if g.rng.Float64() < 0.2 {
		n = 6
	}
	b := []byte(prov + letter)
	for range n {
		b = append(b, plateChars[g.rng.IntN(len(plateChars))])
	}
	return string(b)
}

// IDNumber returns a resident identity number with a correct check digit.
func (g *Generator) IDNumber() string {
	birth := time.Date(1950+g.rng.IntN(55), time.Month(1+g.rng.IntN(12)), 1+g.rng.IntN(28), 0, 0, 0, 0, time.UTC)
	s := g.pick(areaCodes) + birth.Format("20060102") + fmt.Sprintf("%03d", g.rng.IntN(1000))
	return s + string(event.IDCheckDigit(s))
}

func (g *Generator) valid() Message {
	g.seq++
	id := "gen-" + strconv.FormatUint(g.cfg.Seed, 36) + "-" + strconv.FormatUint(g.seq, 36)
	t := g.eventTime().Format("2006-01-02T15:04:05.000Z07:00")
	lat := baseLat + (g.rng.Float64()-0.5)*0.3
	lon := baseLon + (g.rng.Float64()-0.5)*0.4
	var topic, typ, dev, extra string
	var buyerID, buyerName string
	switch g.rng.IntN(20) {
	case 0, 1, 2, 3, 4, 5:
		topic, typ, dev = "camera", "camera.detection", fmt.Sprintf("cam-%05d", g.rng.IntN(28200))
		obj := g.pick(cameraObjects)
		extra = fmt.Sprintf(`,"camera_class":%q,"object":%q,"count":%d,"confidence":%.2f,"track_id":"t%d"`,
			[]string{"A", "B"}[g.rng.IntN(2)], obj, 1+g.rng.IntN(20), 0.5+g.rng.Float64()/2, g.rng.IntN(1e6))
		if obj == "vehicle" && g.rng.IntN(2) == 0 {
			extra += fmt.Sprintf(`,"plate":%q,"plate_color":%q`, g.Plate(), g.pick(plateColors))
		}
		if g.rng.IntN(50) == 0 {
			extra += fmt.Sprintf(`,"behavior":%q`, g.pick(behaviors))
		}
	case 6:
		topic, typ, dev = "camera", "camera.health", fmt.Sprintf("cam-%05d", g.rng.IntN(28200))
		extra = fmt.Sprintf(`,"status":%q`, g.pick(healthStatuses))
	case 7, 8:
		topic, typ, dev = "camera", "device.heartbeat", fmt.Sprintf("cam-%05d", g.rng.IntN(28200))
	case 9, 10, 11, 12:
		topic, typ, dev = "checkpoint", "checkpoint.pass", fmt.Sprintf("kk-%03d", g.rng.IntN(110))
		extra = fmt.Sprintf(`,"lane":%d,"plate":%q,"plate_color":%q,"vehicle_type":%q,"vehicle_color":"白","speed_kmh":%.1f,"heading_deg":%.0f,"confidence":0.97`,
			1+g.rng.IntN(4), g.Plate(), g.pick(plateColors), g.pick(vehicleTypes), g.rng.Float64()*90, g.rng.Float64()*359)
	case 13, 14:
		topic, typ, dev = "fuel", "fuel.purchase", fmt.Sprintf("fuel-%03d-t1", g.rng.IntN(450))
		buyerID, buyerName = g.IDNumber(), g.pick(surnames)+g.pick(givenNames)
		container := "vehicle"
		if g.rng.IntN(10) == 0 {
			container = "bulk"
		}
		extra = fmt.Sprintf(`,"station_id":"st-%03d","buyer_id":%q,"buyer_name":%q,"plate":%q,"fuel":%q,"container":%q,"volume_l":%.1f`,
			g.rng.IntN(450), buyerID, buyerName, g.Plate(), g.pick(fuels), container, 5+g.rng.Float64()*60)
		if container == "bulk" && g.rng.IntN(3) > 0 {
			extra += fmt.Sprintf(`,"permit_no":"XY%06d"`, g.rng.IntN(1e6))
		}
	case 15:
		topic, typ, dev = "drone", "drone.telemetry", fmt.Sprintf("uav-%02d", g.rng.IntN(20))
		extra = fmt.Sprintf(`,"mission_id":"m-%d","alt_m":%.1f,"heading_deg":%.0f,"speed_ms":%.1f,"battery_pct":%.0f`,
			g.rng.IntN(100), 50+g.rng.Float64()*100, g.rng.Float64()*359, g.rng.Float64()*15, 20+g.rng.Float64()*80)
	case 16:
		topic, typ, dev = "drone", "drone.detection", fmt.Sprintf("uav-%02d", g.rng.IntN(20))
		extra = fmt.Sprintf(`,"object":"person","count":%d,"behavior":%q,"alt_m":%.1f,"confidence":0.9`, 1+g.rng.IntN(80), g.pick(behaviors), 80+g.rng.Float64()*40)
	case 17, 18:
		topic, typ, dev = "patrol", "patrol.position", fmt.Sprintf("unit-%03d", g.rng.IntN(300))
		extra = fmt.Sprintf(`,"speed_kmh":%.1f,"heading_deg":%.0f,"status":%q`, g.rng.Float64()*60, g.rng.Float64()*359, g.pick(patrolStatuses))
	default:
		topic, typ, dev = "patrol", "patrol.status", fmt.Sprintf("unit-%03d", g.rng.IntN(300))
		extra = fmt.Sprintf(`,"dispatch_id":"d-%d","status":%q`, g.rng.IntN(1e5), g.pick(dispatchAnswers))
	}
	v := fmt.Sprintf(`{"id":%q,"type":%q,"device_id":%q,"time":%q,"lat":%.6f,"lon":%.6f%s}`, id, typ, dev, t, lat, lon, extra)
	return Message{Topic: topic, Key: []byte(dev), Value: []byte(v), Want: WantEvent, ID: id, Type: typ, BuyerID: buyerID, BuyerName: buyerName}
}

// bad returns a message that must be rejected: each kind of bad input of
// CONTRACT.md section 2 in turn.
func (g *Generator) bad() Message {
	m := g.valid()
	g.seq-- // the id of a rejected message is not an event
	v := string(m.Value)
	switch g.rng.IntN(9) {
	case 0:
		v = v[:len(v)/2] // truncated
	case 1:
		v = "not json at all"
	case 2:
		v = replaceField(v, `"device_id":`, `"device_idx":`) // missing field
	case 3:
		v = replaceField(v, `"lat":`, `"lat":"north","x":`) // wrong type
	case 4:
		v = replaceField(v, `"lon":`, `"lon":512.5,"lon_was":`) // impossible coordinate
	case 5:
		future := g.cfg.Now().Add(time.Hour).In(shanghai).Format("2006-01-02T15:04:05.000Z07:00")
		v = replaceField(v, `"time":`, `"time":"`+future+`","time_was":`) // future time
	case 6:
		v = replaceField(v, `"type":`, `"type":"camera.unknown","type_was":`)
	case 7:
		// A fuel purchase with a wrong check digit: personal data in bad input.
		m2 := g.fuel()
		return m2
	default:
		v = `{"id":"x","type":"device.heartbeat","device_id":"d","time":"2026-11-26T08:00:00","lat":1,"lon":2}` // no offset
	}
	m.Value = []byte(v)
	m.Want = WantReject
	m.ID, m.Type = "", ""
	return m
}

func (g *Generator) fuel() Message {
	for {
		m := g.valid()
		if m.Type != "fuel.purchase" {
			g.seq--
			continue
		}
		g.seq--
		id := m.BuyerID
		wrong := id[:17] + string("0123456789X"[(strings.IndexByte("0123456789X", id[17])+1)%11])
		m.Value = []byte(strings.ReplaceAll(string(m.Value), id, wrong))
		m.BuyerID = wrong
		m.Want = WantReject
		m.ID, m.Type = "", ""
		return m
	}
}

// replaceField renames the first occurrence of a field prefix, so that the
// original value follows under another (ignored) name.
func replaceField(v, old, repl string) string { return strings.Replace(v, old, repl, 1) }
