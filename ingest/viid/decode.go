package viid

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"citywatch/event"
	"citywatch/internal/city"
)

// text is a JSON string or number (devices send either), kept as text;
// null is empty.
type text string

func (t *text) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) == 0:
		return errors.New("empty value")
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*t = text(strings.TrimSpace(s))
	case bytes.Equal(b, []byte("null")):
		*t = ""
	case b[0] == '-' || b[0] >= '0' && b[0] <= '9':
		*t = text(b)
	case bytes.Equal(b, []byte("true")) || bytes.Equal(b, []byte("false")):
		*t = text(b)
	default:
		return errors.New("not a string or number")
	}
	return nil
}

// number is a JSON number or a string holding one; "" and null are
// absent.
type number struct {
	v  float64
	ok bool
}

func (n *number) UnmarshalJSON(b []byte) error {
	var t text
	if err := t.UnmarshalJSON(b); err != nil {
		return err
	}
	if t == "" {
		*n = number{}
		return nil
	}
	v, err := strconv.ParseFloat(string(t), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("%q is not a number", shorten(string(t)))
	}
	*n = number{v: v, ok: true}
	return nil
}

// records is a list of raw records: a JSON array, or one object where a
// device sent a single record without the array.
type records []json.RawMessage

func (r *records) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '{' {
		*r = records{json.RawMessage(b)}
		return nil
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*r = raw
	return nil
}

// member returns the value of the member of a JSON object whose name
// equals name without regard to case.
func member(obj []byte, name string) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, err
	}
	if v, ok := m[name]; ok {
		return v, nil
	}
	for k, v := range m {
		if strings.EqualFold(k, name) {
			return v, nil
		}
	}
	return nil, fmt.Errorf("no %s", name)
}

// list returns the records of body {"<outer>":{"<inner>":[...]}}, names
// matched without regard to case.
func list(body []byte, outer, inner string) (records, error) {
	o, err := member(body, outer)
	if err != nil {
		return nil, err
	}
	in, err := member(o, inner)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", outer, err)
	}
	var rs records
	if err := json.Unmarshal(in, &rs); err != nil {
		return nil, fmt.Errorf("%s.%s: %w", outer, inner, err)
	}
	return rs, nil
}

// Record fields. encoding/json matches member names to these without
// regard to case; aliases seen in the field are extra fields. Each type's
// fieldSet lists the same names in the same order, for misspelling.
type motorVehicle struct {
	MotorVehicleID   text
	DeviceID         text
	TollgateID       text
	PlateNo          text
	PlateNumber      text // alias of PlateNo
	PlateColor       text
	PassTime         text
	AppearTime       text
	MarkTime         text
	LaneNo           number
	Speed            number
	VehicleClass     text
	VehicleColor     text
	PlateReliability number
	HasPlate         text
	SubImageList     images
}

var motorVehicleFields = newFieldSet("MotorVehicleID", "DeviceID", "TollgateID", "PlateNo", "PlateNumber", "PlateColor", "PassTime", "AppearTime", "MarkTime",
	"LaneNo", "Speed", "VehicleClass", "VehicleColor", "PlateReliability", "HasPlate", "SubImageList")

// absent returns the fields of motorVehicleFields a misspelling may have
// left out: those not set, where of a name and its aliases (the plate, the
// times) none is.
func (r *motorVehicle) absent() uint32 {
	var a absence
	a.set(0, r.MotorVehicleID == "")
	a.set(1, r.DeviceID == "")
	a.set(2, r.TollgateID == "")
	a.set(3, r.PlateNo == "" && r.PlateNumber == "", 4)
	a.set(5, r.PlateColor == "")
	a.set(6, r.PassTime == "" && r.AppearTime == "" && r.MarkTime == "", 7, 8)
	a.set(9, !r.LaneNo.ok)
	a.set(10, !r.Speed.ok)
	a.set(11, r.VehicleClass == "")
	a.set(12, r.VehicleColor == "")
	a.set(13, !r.PlateReliability.ok)
	a.set(14, r.HasPlate == "")
	return uint32(a)
}

type face struct {
	FaceID           text
	DeviceID         text
	FaceAppearTime   text
	ShotTime         text
	LocationMarkTime text
	AppearTime       text
	SubImageList     images
}

func (r *face) sighting() sighting {
	return sighting{r.FaceID, r.DeviceID, [4]text{r.FaceAppearTime, r.ShotTime, r.LocationMarkTime, r.AppearTime}, r.SubImageList}
}

type person struct {
	PersonID         text
	DeviceID         text
	PersonAppearTime text
	ShotTime         text
	LocationMarkTime text
	AppearTime       text
	SubImageList     images
}

func (r *person) sighting() sighting {
	return sighting{r.PersonID, r.DeviceID, [4]text{r.PersonAppearTime, r.ShotTime, r.LocationMarkTime, r.AppearTime}, r.SubImageList}
}

// sighting is what the mapper reads of a face or a person record, which
// differ only in the names of their id and first time field.
type sighting struct {
	id, device text
	times      [4]text // the kind's appearance time, ShotTime, LocationMarkTime, AppearTime
	images     images
}

// sightingKind names the fields of a kind of sighting record, in the
// order of sighting.
type sightingKind struct {
	object string // the event's object
	fields fieldSet
	names  [6]string // id, device, then the four times
}

func newSightingKind(object, id, appear string) sightingKind {
	names := [6]string{id, "DeviceID", appear, "ShotTime", "LocationMarkTime", "AppearTime"}
	return sightingKind{object: object, names: names, fields: newFieldSet(append(names[:], "SubImageList")...)}
}

var (
	faceKind   = newSightingKind("face", "FaceID", "FaceAppearTime")
	personKind = newSightingKind("person", "PersonID", "PersonAppearTime")
)

func (r *sighting) absent() uint32 {
	var a absence
	a.set(0, r.id == "")
	a.set(1, r.device == "")
	a.set(2, r.times == [4]text{}, 3, 4, 5)
	return uint32(a)
}

// absence is a set of indexes into a fieldSet.
type absence uint32

func (a *absence) set(i int, absent bool, aliases ...int) {
	if !absent {
		return
	}
	*a |= 1 << i
	for _, j := range aliases {
		*a |= 1 << j
	}
}

// recordInfo is what the server learns of a record besides its event.
type recordInfo struct {
	id       string // the record id, for its answer
	device   string // the record's DeviceID as sent
	misspelt []misspelling
}

// misspelling is a member of a record that is not a field the receiver
// reads but looks like a typo of one that is absent.
type misspelling struct {
	member, field string
}

// hint says which member may have been meant for field, for the reason
// of a record that lacks it.
func (ri *recordInfo) hint(fields ...string) string {
	for _, m := range ri.misspelt {
		for _, f := range fields {
			if m.field == f {
				return fmt.Sprintf(" (is %q a misspelling of %s?)", shorten(m.member), f)
			}
		}
	}
	return ""
}

// recordError is why one record failed; its StatusCode goes into the
// record's ResponseStatusObject.
type recordError struct {
	code   int
	reason string
}

func (e *recordError) Error() string { return e.reason }

func badRecord(format string, args ...any) error {
	return &recordError{code: codeInvalidJSONContent, reason: fmt.Sprintf(format, args...)}
}

// mapper turns records into events.
type mapper struct {
	devices Devices
	loc     *time.Location
}

// maxRecordID bounds a record id, so that the event id stays within the
// contract's 128 characters.
const maxRecordID = 100

func recordID(field string, v text, ri *recordInfo) (string, error) {
	switch {
	case v == "":
		return "", badRecord("%s missing%s", field, ri.hint(field))
	case utf8.RuneCountInString(string(v)) > maxRecordID:
		return "", badRecord("%s longer than %d characters", field, maxRecordID)
	}
	return string(v), nil
}

// motorVehicle maps one MotorVehicleObject into e: with a TollgateID a
// checkpoint.pass at that tollgate, otherwise a camera.detection of a
// vehicle by DeviceID. It fills ri for the answer and the metrics.
func (m *mapper) motorVehicle(raw []byte, e *event.Event, ri *recordInfo) error {
	var r motorVehicle
	if err := json.Unmarshal(raw, &r); err != nil {
		ri.id = idOf(raw, "MotorVehicleID")
		return badRecord("cannot decode record: %v", jsonReason(err))
	}
	ri.device = string(r.DeviceID)
	ri.misspelt = findMisspelt(raw, motorVehicleFields, r.absent(), ri.misspelt[:0])
	id, err := recordID("MotorVehicleID", r.MotorVehicleID, ri)
	if err != nil {
		return err
	}
	ri.id = id
	e.Reset()
	e.ID = "viid-mv-" + id
	t, err := m.firstTime(ri, [4]text{r.PassTime, r.AppearTime, r.MarkTime}, "PassTime", "AppearTime", "MarkTime")
	if err != nil {
		return err
	}
	e.Time = t
	plate := r.PlateNo
	if plate == "" {
		plate = r.PlateNumber
	}
	e.Plate = readablePlate(string(plate))
	if r.HasPlate == "0" {
		e.Plate = ""
	}
	if e.Plate != "" {
		if e.PlateColor, err = plateColor(r.PlateColor); err != nil {
			return err
		}
	}
	e.Confidence = 1
	if r.PlateReliability.ok && e.Plate != "" {
		c := r.PlateReliability.v
		if c > 1 {
			c /= 100 // GA/T 1400 gives 0–100
		}
		if c < 0 || c > 1 {
			return badRecord("PlateReliability %v out of range 0–100", r.PlateReliability.v)
		}
		e.Confidence = c
	}
	if r.TollgateID != "" {
		d := m.devices.Device(string(r.TollgateID))
		if d == nil || d.Kind != city.KindCheckpoint {
			return badRecord("unknown tollgate %q", shorten(string(r.TollgateID)))
		}
		e.Type, e.DeviceID, e.Lat, e.Lon = event.TypeCheckpointPass, d.ID, d.Lat, d.Lon
		if !r.LaneNo.ok || r.LaneNo.v < 1 || r.LaneNo.v != math.Trunc(r.LaneNo.v) || r.LaneNo.v > math.MaxInt32 {
			return badRecord("LaneNo missing or not a lane number ≥ 1%s", ri.hint("LaneNo"))
		}
		e.Lane = int(r.LaneNo.v)
		// checkpoint.pass requires speed_kmh and has no "unknown" for it:
		// a record without Speed (or with a misspelt one, which is
		// counted) passes at 0, as the contract notes say.
		if r.Speed.ok {
			if r.Speed.v < 0 || r.Speed.v > 1000 {
				return badRecord("Speed %v out of range", r.Speed.v)
			}
			e.SpeedKmh = r.Speed.v
		}
		e.VehicleType = vehicleType(string(r.VehicleClass))
		e.VehicleColor = colorName(string(r.VehicleColor))
		e.Attrs = r.SubImageList.appendAttrs(e.Attrs)
		return nil
	}
	if err := m.camera(r.DeviceID, e, ri); err != nil {
		return err
	}
	e.Object, e.Count = "vehicle", 1
	e.Attrs = r.SubImageList.appendAttrs(e.Attrs)
	return nil
}

func (m *mapper) face(raw []byte, e *event.Event, ri *recordInfo) error {
	var r face
	err := json.Unmarshal(raw, &r)
	return m.sighting(raw, err, r.sighting(), &faceKind, e, ri)
}

func (m *mapper) person(raw []byte, e *event.Event, ri *recordInfo) error {
	var r person
	err := json.Unmarshal(raw, &r)
	return m.sighting(raw, err, r.sighting(), &personKind, e, ri)
}

// sighting maps a face or person record r, decoded from raw with error
// decodeErr, to a camera.detection of k's object.
func (m *mapper) sighting(raw []byte, decodeErr error, r sighting, k *sightingKind, e *event.Event, ri *recordInfo) error {
	if decodeErr != nil {
		ri.id = idOf(raw, k.names[0])
		return badRecord("cannot decode record: %v", jsonReason(decodeErr))
	}
	ri.device = string(r.device)
	ri.misspelt = findMisspelt(raw, k.fields, r.absent(), ri.misspelt[:0])
	id, err := recordID(k.names[0], r.id, ri)
	if err != nil {
		return err
	}
	ri.id = id
	e.Reset()
	e.ID = "viid-" + k.object + "-" + id
	if e.Time, err = m.firstTime(ri, r.times, k.names[2], k.names[3], k.names[4], k.names[5]); err != nil {
		return err
	}
	if err := m.camera(r.device, e, ri); err != nil {
		return err
	}
	e.Object, e.Count, e.Confidence = k.object, 1, 1
	e.Attrs = r.images.appendAttrs(e.Attrs)
	return nil
}

// camera makes e a camera.detection of the registered camera id.
func (m *mapper) camera(id text, e *event.Event, ri *recordInfo) error {
	if id == "" {
		return badRecord("DeviceID missing%s", ri.hint("DeviceID", "TollgateID"))
	}
	d := m.devices.Device(string(id))
	if d == nil || d.Kind != city.KindCamera {
		return badRecord("unknown camera %q%s", shorten(string(id)), ri.hint("TollgateID"))
	}
	e.Type, e.DeviceID, e.Lat, e.Lon, e.CameraClass = event.TypeCameraDetection, d.ID, d.Lat, d.Lon, d.Class
	return nil
}

// firstTime parses the first of vals that is set; names are their
// fields. An array, not a map, so that a record costs no allocation.
func (m *mapper) firstTime(ri *recordInfo, vals [4]text, names ...string) (time.Time, error) {
	for i, n := range names {
		if v := vals[i]; v != "" {
			t, err := ParseTime(string(v), m.loc)
			if err != nil {
				return time.Time{}, badRecord("%s: %v", n, err)
			}
			return t, nil
		}
	}
	return time.Time{}, badRecord("%s missing%s", names[0], ri.hint(names...))
}

// ParseTime reads a GA/T 1400 time: yyyyMMddHHmmss or yyyyMMddHHmmssSSS
// (local time of loc, as devices send it), yyyy-MM-dd HH:mm:ss[.SSS]
// (also local), or RFC 3339 with an offset.
func ParseTime(s string, loc *time.Location) (time.Time, error) {
	layouts := []string{"20060102150405", "20060102150405.000", "2006-01-02 15:04:05", "2006-01-02 15:04:05.000", "2006-01-02T15:04:05"}
	switch {
	case len(s) == 17 && allDigits(s):
		s = s[:14] + "." + s[14:]
	case strings.ContainsAny(s, "Zz+") || len(s) > 19 && strings.Contains(s, "T") && strings.LastIndexByte(s, '-') > 10:
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not a GA/T 1400 time", shorten(s))
		}
		return t, nil
	}
	for _, l := range layouts {
		if len(l) != len(s) {
			continue
		}
		if t, err := time.ParseInLocation(l, s, loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a GA/T 1400 time (yyyyMMddHHmmss)", shorten(s))
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// readablePlate returns the plate as read, or "" for the markers devices
// send when they read none.
func readablePlate(p string) string {
	switch p {
	case "", "-", "无", "无牌", "无车牌", "未识别", "车牌", "未知", "00000000", "NONE", "none", "unknown":
		return ""
	}
	return p
}

// plateColor maps a GA/T 1400 plate colour (ColorType code of GA/T
// 1400.3, or a name) to the contract's value. Colours the contract has no
// value for are "".
func plateColor(v text) (string, error) {
	s := strings.ToLower(codeDigits(string(v)))
	switch s {
	case "":
		return "", nil
	case "1", "black", "黑", "黑色":
		return "black", nil
	case "2", "white", "白", "白色":
		return "white", nil
	case "5", "blue", "蓝", "蓝色":
		return "blue", nil
	case "6", "yellow", "黄", "黄色":
		return "yellow", nil
	case "9", "green", "绿", "绿色", "渐变绿", "黄绿", "黄绿双拼":
		return "green", nil
	}
	if n, err := strconv.Atoi(s); err == nil && (n >= 0 && n <= 13 || n == 99) {
		return "", nil // a valid ColorType the contract has no plate colour for
	}
	return "", badRecord("PlateColor %q is not a GA/T 1400 colour", shorten(string(v)))
}

// colorNames are the GA/T 1400.3 ColorType codes, for vehicle colours.
var colorNames = map[string]string{
	"1": "black", "2": "white", "3": "gray", "4": "red", "5": "blue", "6": "yellow", "7": "orange",
	"8": "brown", "9": "green", "10": "purple", "11": "cyan", "12": "pink", "13": "transparent", "99": "other",
}

// bodyColorNames are the vehicle body colour codes of GA 24.8 (机动车车身
// 颜色), which platforms fed from vehicle registration data send as
// VehicleColor, in the words colorNames uses: the contract leaves
// vehicle_color free text, and one word per colour keeps a search for
// "black" finding both codes.
var bodyColorNames = map[string]string{
	"A": "white", "B": "gray", "C": "yellow", "D": "pink", "E": "red", "F": "purple",
	"G": "green", "H": "blue", "I": "brown", "J": "black", "Z": "other",
}

// colorName returns a vehicle colour code (ColorType, zero-padded or
// not, or a GA 24.8 letter) as a name; free text stays.
func colorName(s string) string {
	if n, ok := colorNames[codeDigits(s)]; ok {
		return n
	}
	if len(s) == 1 {
		if n, ok := bodyColorNames[strings.ToUpper(s)]; ok {
			return n
		}
	}
	if utf8.RuneCountInString(s) > 32 {
		return ""
	}
	return s
}

// codeDigits drops the leading zeros of a numeric code ("02" → "2"), as
// some platforms pad the codes of GA/T 1400.3 to two digits; other text
// stays.
func codeDigits(s string) string {
	if len(s) < 2 || s[0] != '0' || !allDigits(s) {
		return s
	}
	s = strings.TrimLeft(s, "0")
	if s == "" {
		return "0"
	}
	return s
}

// vehicleType maps VehicleClass (GA 24.4 vehicle type code, as GA/T 1400
// uses, or a name) to the contract's vehicle_type.
func vehicleType(s string) string {
	u := strings.ToUpper(strings.TrimSpace(s))
	switch u {
	case "CAR", "SUV", "VAN", "TRUCK", "BUS", "MOTORCYCLE", "OTHER":
		return strings.ToLower(u)
	case "轿车", "小型轿车", "小汽车":
		return "car"
	case "越野车", "SUV车":
		return "suv"
	case "面包车", "MPV", "商务车":
		return "van"
	case "货车", "卡车", "大货车", "小货车", "牵引车":
		return "truck"
	case "客车", "大客车", "公交车", "大巴":
		return "bus"
	case "摩托车":
		return "motorcycle"
	}
	if u == "" {
		return "other"
	}
	switch u[0] {
	case 'K':
		switch {
		case strings.HasPrefix(u, "K1"), strings.HasPrefix(u, "K2"):
			return "bus"
		case u == "K32" || u == "K42":
			return "suv"
		case u == "K34" || u == "K41" || u == "K44":
			return "van"
		case strings.HasPrefix(u, "K3"), strings.HasPrefix(u, "K4"):
			return "car"
		}
	case 'H', 'Q', 'Z', 'G', 'B':
		return "truck"
	case 'M':
		return "motorcycle"
	}
	return "other"
}

// idOf digs the record id out of a record that did not decode, for its
// answer.
func idOf(raw []byte, field string) string {
	v, err := member(raw, field)
	if err != nil {
		return ""
	}
	var t text
	if t.UnmarshalJSON(v) != nil || utf8.RuneCountInString(string(t)) > maxRecordID {
		return ""
	}
	return string(t)
}

// jsonReason shortens encoding/json's errors to what a device integrator
// needs.
func jsonReason(err error) string {
	var ut *json.UnmarshalTypeError
	if errors.As(err, &ut) {
		return fmt.Sprintf("field %s has the wrong type", ut.Field)
	}
	return err.Error()
}

func shorten(s string) string {
	if len(s) <= 64 {
		return s
	}
	n := 64
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
