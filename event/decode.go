package event

import (
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"
)

// Defaults of a zero Decoder.
const (
	// DefaultMaxFuture is how far ahead of the receiver's clock an event
	// time may be when Decoder.MaxFuture is zero.
	DefaultMaxFuture = 5 * time.Minute
	// DefaultMaxSize is the largest message, in bytes, when
	// Decoder.MaxSize is zero.
	DefaultMaxSize = 64 << 10
)

// normalizedSlack is how much larger than MaxSize a normalised message may
// be: normalising adds fixed fields (defaults, plate_valid, the pseudonym,
// millisecond digits, the attrs wrapper) but never grows a string.
const normalizedSlack = 4 << 10

// Bounds the contract leaves open; see the field comments in Decode.
const (
	maxIDRunes       = 128 // id, and station_id, mission_id, dispatch_id, track_id, permit_no
	maxDeviceIDRunes = 64
	maxNameRunes     = 64 // buyer_name and its masked form
	maxInt           = math.MaxInt32
)

// minTime is the earliest time an event may carry: anything before 2000 is
// a device clock that was never set.
var minTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Decoder decodes and validates messages; not safe for concurrent use (one
// per goroutine); reuse it. The zero value is ready to use with the
// defaults.
//
// String fields of a decoded Event share one copy of the message that the
// Decoder makes per call, so a decoded Event does not depend on the caller's
// data slice, which may be reused at once.
type Decoder struct {
	Now       func() time.Time // receiver's clock for the future-time check; nil = time.Now
	MaxFuture time.Duration    // default DefaultMaxFuture (5 minutes) when zero
	MaxSize   int              // max message bytes; default DefaultMaxSize (64 KiB) when zero

	msg        string         // the message being decoded
	normalized bool           // decoding the normalised form
	top        memberSet      // members of the message object
	attrs      memberSet      // members of the attrs object (normalised form)
	slot       [numKeys]int32 // 1 + index in top.list of each known key, 0 when absent
}

// member is one "key": value pair of an object, as offsets into the message.
// It holds no pointers, so that filling the list costs no write barriers.
type member struct {
	keyStart int32 // opening quote of the key
	keyEnd   int32 // after the closing quote
	valStart int32
	valEnd   int32
	kind     valKind
	esc      bool // a string value with escapes
	keyEsc   bool // a key with escapes
	key      keyID
}

// name returns the key of m with escapes resolved.
func (d *Decoder) name(m *member) string {
	n := d.msg[m.keyStart+1 : m.keyEnd-1]
	if m.keyEsc {
		n = unescape(n)
	}
	return n
}

// memberSet collects the members of one object and detects duplicate keys
// among those it is asked to check.
type memberSet struct {
	list  []member
	names []string // checked names while few
	seen  map[string]struct{}
	big   bool // names moved to seen
}

// smallSet is how many names are compared linearly before a map is used.
const smallSet = 16

func (ms *memberSet) reset() {
	ms.list = ms.list[:0]
	ms.names = ms.names[:0]
	if ms.big {
		clear(ms.seen)
		ms.big = false
	}
}

// add records name and reports false if it was recorded before.
func (ms *memberSet) add(name string) bool {
	if ms.big {
		if _, dup := ms.seen[name]; dup {
			return false
		}
		ms.seen[name] = struct{}{}
		return true
	}
	for _, n := range ms.names {
		if n == name {
			return false
		}
	}
	ms.names = append(ms.names, name)
	if len(ms.names) > smallSet {
		if ms.seen == nil {
			ms.seen = make(map[string]struct{}, 2*smallSet)
		}
		for _, n := range ms.names {
			ms.seen[n] = struct{}{}
		}
		ms.big = true
	}
	return true
}

// Decode decodes one raw device message (CONTRACT.md section 2) into e,
// which it Resets first, and validates it as the contract says. On error,
// e is left partly filled and must not be used; the error is an *Error.
//
// Where the contract is silent, Decode holds that: id has 1–128 characters
// and device_id 1–64; station_id, mission_id and dispatch_id, when
// required, have 1–128, and so do track_id and permit_no; buyer_name has
// 1–64; a plate as read has at most 32; count and lane are integers from 1
// to 2³¹−1 (1.0 is an integer, 1.5 is not); an optional string field that is
// "" or null is absent; time is not before the year 2000; a buyer_id or
// buyer_name in a message of another type is rejected rather than kept in
// Attrs, so that personal data cannot reach storage by that road.
func (d *Decoder) Decode(data []byte, e *Event) error {
	return d.decode(data, e, false, false)
}

// DecodeShared is Decode without the copy, as DecodeNormalizedShared is
// DecodeNormalized: the strings of e point into data, which must not
// change while e, or any string taken from it, is in use.
func (d *Decoder) DecodeShared(data []byte, e *Event) error {
	return d.decode(data, e, false, true)
}

// DecodeNormalized decodes the normalised form that AppendJSON writes after
// pseudonymisation into e, which it Resets first: fuel events carry
// buyer_pseudonym, buyer_id_masked and buyer_name_masked instead of
// buyer_id and buyer_name, attrs is an object, and plate_valid comes with
// every plate. It validates the same ranges as Decode but does not apply
// the future-time check (the event was checked at ingest), and it rejects a
// raw buyer_id or buyer_name anywhere in the message, and a buyer_id_masked
// that is an unmasked ID number. plate_valid must agree with the plate.
// Unknown fields beside attrs are merged into Attrs. A normalised message
// may be up to 4 KiB larger than MaxSize.
func (d *Decoder) DecodeNormalized(data []byte, e *Event) error {
	return d.decode(data, e, true, false)
}

// DecodeNormalizedShared is DecodeNormalized without the copy: the
// strings of e point into data itself, which the caller hands over and
// must not change while e, or any string taken from it, is in use. It
// suits data allocated for one message alone, as a kafka-go Message's
// Value is, read by a consumer that copies what it keeps (the rule
// engine); the copy was a tenth of a replay's decoding.
func (d *Decoder) DecodeNormalizedShared(data []byte, e *Event) error {
	return d.decode(data, e, true, true)
}

func (d *Decoder) decode(data []byte, e *Event, normalized, shared bool) error {
	e.Reset()
	limit := d.MaxSize
	if limit <= 0 {
		limit = DefaultMaxSize
	}
	if normalized {
		limit += normalizedSlack
	}
	if len(data) > limit {
		return &Error{Code: CodeTooLarge, Reason: strconv.Itoa(len(data)) + " bytes, limit " + strconv.Itoa(limit)}
	}
	if len(data) > math.MaxInt32 {
		return &Error{Code: CodeTooLarge, Reason: strconv.Itoa(len(data)) + " bytes"}
	}
	if shared {
		d.msg = unsafe.String(unsafe.SliceData(data), len(data))
	} else {
		d.msg = string(data)
	}
	d.normalized = normalized
	d.top.reset()
	d.attrs.reset()
	d.slot = [numKeys]int32{}
	if err := d.parse(); err != nil {
		return err
	}
	return d.fill(e)
}

// parse checks that the message is one JSON object and records its
// members.
func (d *Decoder) parse() error {
	s := d.msg
	i := skipWS(s, 0)
	if i >= len(s) || s[i] != '{' {
		if i >= len(s) {
			return malformedAt(i, "empty message")
		}
		return malformedAt(i, "expected '{'")
	}
	end, err := d.parseObject(i, &d.top, true)
	if err != nil {
		return err
	}
	if i = skipWS(s, end); i != len(s) {
		return malformedAt(i, "data after the object")
	}
	return nil
}

// parseObject parses the object opening at msg[i] into set and returns the
// index after it. Top-level keys are looked up as contract fields. The
// members of the message and of its attrs object are checked for duplicate
// keys; objects inside unknown values are kept verbatim, unchecked.
func (d *Decoder) parseObject(i int, set *memberSet, top bool) (int, error) {
	s := d.msg
	i = skipWS(s, i+1)
	if i < len(s) && s[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(s) || s[i] != '"' {
			return 0, malformedAt(i, "expected string key")
		}
		keyStart := i
		keyEnd, keyEsc, err := scanString(s, i)
		if err != nil {
			return 0, err
		}
		m := member{keyStart: int32(keyStart), keyEnd: int32(keyEnd), keyEsc: keyEsc}
		name := d.name(&m)
		if top {
			m.key = lookupKey(name)
		}
		if m.key != kUnknown {
			if d.slot[m.key] != 0 {
				return 0, malformedAt(keyStart, "duplicate key "+quoteValue(name))
			}
			d.slot[m.key] = int32(len(set.list) + 1)
		} else if !set.add(name) {
			return 0, malformedAt(keyStart, "duplicate key "+quoteValue(name))
		}
		i = skipWS(s, keyEnd)
		if i >= len(s) || s[i] != ':' {
			return 0, malformedAt(i, "expected ':' after object key")
		}
		i = skipWS(s, i+1)
		m.valStart = int32(i)
		var end int
		if top && d.normalized && m.key == kAttrs && i < len(s) && s[i] == '{' {
			m.kind = kindObject
			end, err = d.parseObject(i, &d.attrs, false)
		} else {
			m.kind, end, m.esc, err = scanValue(s, i, maxDepth)
		}
		if err != nil {
			return 0, err
		}
		m.valEnd = int32(end)
		set.list = append(set.list, m)
		i = skipWS(s, end)
		if i >= len(s) {
			return 0, malformedAt(i, "unexpected end of input")
		}
		switch s[i] {
		case ',':
			i = skipWS(s, i+1)
		case '}':
			return i + 1, nil
		default:
			return 0, malformedAt(i, "expected ',' or '}'")
		}
	}
}

func (d *Decoder) get(k keyID) *member {
	if j := d.slot[k]; j != 0 {
		return &d.top.list[j-1]
	}
	return nil
}

// str returns the string value of field k; ok is false when it is absent
// or null.
func (d *Decoder) str(k keyID) (v string, ok bool, err error) {
	m := d.get(k)
	if m == nil || m.kind == kindNull {
		return "", false, nil
	}
	if m.kind != kindString {
		return "", false, wrongType(keyNames[k], "string", m.kind)
	}
	v = d.msg[m.valStart+1 : m.valEnd-1]
	if m.esc {
		v = unescape(v)
	}
	return v, true, nil
}

// reqStr returns the string value of required field k with 1 to maxRunes
// characters.
func (d *Decoder) reqStr(k keyID, maxRunes int) (string, error) {
	v, ok, err := d.str(k)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", missingField(keyNames[k])
	}
	return v, checkLen(k, v, 1, maxRunes)
}

// optStr returns the string value of optional field k with at most
// maxRunes characters (no limit when maxRunes is 0); "" means absent.
func (d *Decoder) optStr(k keyID, maxRunes int) (string, error) {
	v, _, err := d.str(k)
	if err != nil || maxRunes == 0 {
		return v, err
	}
	return v, checkLen(k, v, 0, maxRunes)
}

func checkLen(k keyID, v string, lo, hi int) error {
	if len(v) < lo || len(v) > hi && utf8.RuneCountInString(v) > hi {
		return outOfRange(keyNames[k], "must have "+strconv.Itoa(lo)+" to "+strconv.Itoa(hi)+" characters")
	}
	return nil
}

// enum returns the value of field k, which must be one of allowed; the
// result is the constant from allowed, not a copy from the message.
func (d *Decoder) enum(k keyID, required bool, allowed []string) (string, error) {
	v, ok, err := d.str(k)
	if err != nil {
		return "", err
	}
	if !ok {
		if required {
			return "", missingField(keyNames[k])
		}
		return "", nil
	}
	for _, a := range allowed {
		if v == a {
			return a, nil
		}
	}
	if !required && v == "" {
		return "", nil
	}
	return "", outOfRange(keyNames[k], quoteValue(v)+" is not one of "+listEnum(allowed))
}

func listEnum(allowed []string) string {
	s := ""
	for i, a := range allowed {
		if i > 0 {
			s += ", "
		}
		if a == "" {
			a = `""`
		}
		s += a
	}
	return s
}

// num returns the number value of field k; ok is false when it is absent
// or null.
func (d *Decoder) num(k keyID) (v float64, ok bool, err error) {
	m := d.get(k)
	if m == nil || m.kind == kindNull {
		return 0, false, nil
	}
	if m.kind != kindNumber {
		return 0, false, wrongType(keyNames[k], "number", m.kind)
	}
	v, err = parseNumber(d.msg[m.valStart:m.valEnd])
	if err != nil { // only overflow: the syntax was checked
		return 0, false, outOfRange(keyNames[k], "too large")
	}
	return v, true, nil
}

// pow10 holds the powers of ten that a float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}

// parseNumber parses a JSON number. Plain decimals of at most 15 digits,
// the usual case, take an exact fast path: both the digits as an integer
// and the power of ten are exact in a float64, and so the quotient is
// correctly rounded, as strconv.ParseFloat's would be.
func parseNumber(s string) (float64, error) {
	i := 0
	neg := len(s) > 0 && s[0] == '-'
	if neg {
		i++
	}
	var mant uint64
	digits, frac := 0, -1
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
			mant = mant*10 + uint64(c-'0')
			digits++
			if frac >= 0 {
				frac++
			}
		case c == '.' && frac < 0:
			frac = 0
		default:
			return strconv.ParseFloat(s, 64) // an exponent
		}
	}
	if digits > 15 {
		return strconv.ParseFloat(s, 64)
	}
	f := float64(mant)
	if frac > 0 {
		f /= pow10[frac]
	}
	if neg {
		f = -f
	}
	return f, nil
}

// rangeNum returns the number value of field k, within lo..hi (inclusive
// bounds; an exclusive lower bound when openLo), or def when it is absent
// and not required.
func (d *Decoder) rangeNum(k keyID, required bool, def, lo, hi float64, openLo bool) (float64, bool, error) {
	v, ok, err := d.num(k)
	if err != nil {
		return 0, false, err
	}
	if !ok {
		if required {
			return 0, false, missingField(keyNames[k])
		}
		return def, false, nil
	}
	if v < lo || v > hi || openLo && v == lo {
		return 0, false, outOfRange(keyNames[k], rangeReason(v, lo, hi, openLo))
	}
	return v, true, nil
}

func rangeReason(v, lo, hi float64, openLo bool) string {
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	switch {
	case math.IsInf(hi, 1) && openLo:
		return f(v) + " is not greater than " + f(lo)
	case math.IsInf(hi, 1):
		return f(v) + " is less than " + f(lo)
	}
	return f(v) + " is not within " + f(lo) + ".." + f(hi)
}

// integer returns the integer value of field k, within 1..maxInt, or def
// when it is absent and not required.
func (d *Decoder) integer(k keyID, required bool, def int) (int, error) {
	v, ok, err := d.num(k)
	if err != nil {
		return 0, err
	}
	if !ok {
		if required {
			return 0, missingField(keyNames[k])
		}
		return def, nil
	}
	if v != math.Trunc(v) {
		return 0, &Error{Code: CodeWrongType, Field: keyNames[k], Reason: "want integer, got " + strconv.FormatFloat(v, 'g', -1, 64)}
	}
	if v < 1 || v > maxInt {
		return 0, outOfRange(keyNames[k], rangeReason(v, 1, maxInt, false))
	}
	return int(v), nil
}

func (d *Decoder) boolean(k keyID) (v, ok bool, err error) {
	m := d.get(k)
	if m == nil || m.kind == kindNull {
		return false, false, nil
	}
	switch m.kind {
	case kindTrue:
		return true, true, nil
	case kindFalse:
		return false, true, nil
	}
	return false, false, wrongType(keyNames[k], "boolean", m.kind)
}

var inf = math.Inf(1)

// Enumerations of the contract.
var (
	cameraClasses = []string{"A", "B"}
	objects       = []string{"person", "vehicle", "non_motor", "face"}
	behaviors     = []string{"loitering", "intrusion", "fight", "fall", "crowd", "smoke_fire", "wrong_way"}
	healthStatus  = []string{"ok", "video_loss", "tamper", "blur", "offline"}
	plateColors   = []string{"blue", "yellow", "green", "white", "black", ""}
	vehicleTypes  = []string{"car", "suv", "van", "truck", "bus", "motorcycle", "other"}
	fuels         = []string{"92", "95", "98", "diesel"}
	containers    = []string{"bulk", "vehicle"}
	patrolStatus  = []string{"available", "busy", "off_duty"}
	answerStatus  = []string{"accepted", "declined", "en_route", "on_scene", "cleared"}
)

// fill validates the parsed members and sets e's fields.
func (d *Decoder) fill(e *Event) error {
	ts, ok, err := d.str(kType)
	if err != nil {
		return err
	}
	if !ok {
		return missingField("type")
	}
	t := ParseType(ts)
	if t == TypeUnknown {
		return &Error{Code: CodeUnknownType, Field: "type", Reason: "unknown type " + quoteValue(ts)}
	}
	e.Type = t
	if d.normalized || t != TypeFuelPurchase {
		for _, k := range [...]keyID{kBuyerID, kBuyerName} {
			if d.slot[k] != 0 {
				return &Error{Code: CodePersonalField, Field: keyNames[k], Reason: "not allowed in a " + personalWhere(d.normalized, t)}
			}
		}
	}

	if e.ID, err = d.reqStr(kID, maxIDRunes); err != nil {
		return err
	}
	if e.DeviceID, err = d.reqStr(kDeviceID, maxDeviceIDRunes); err != nil {
		return err
	}
	if err = d.time(e); err != nil {
		return err
	}
	if e.Lat, _, err = d.rangeNum(kLat, true, 0, -90, 90, false); err != nil {
		return err
	}
	if e.Lon, _, err = d.rangeNum(kLon, true, 0, -180, 180, false); err != nil {
		return err
	}

	switch t {
	case TypeCameraDetection:
		if e.CameraClass, err = d.enum(kCameraClass, true, cameraClasses); err != nil {
			return err
		}
		err = d.detection(e)
	case TypeDroneDetection:
		if err = d.detection(e); err != nil {
			return err
		}
		e.AltM, _, err = d.rangeNum(kAltM, false, 0, -inf, inf, false)
	case TypeCameraHealth:
		if e.Status, err = d.enum(kStatus, true, healthStatus); err != nil {
			return err
		}
		e.Detail, err = d.optStr(kDetail, 0)
	case TypeCheckpointPass:
		err = d.checkpoint(e)
	case TypeFuelPurchase:
		err = d.fuel(e)
	case TypeDroneTelemetry:
		err = d.telemetry(e)
	case TypePatrolPosition:
		if e.SpeedKmh, _, err = d.rangeNum(kSpeedKmh, true, 0, 0, inf, false); err != nil {
			return err
		}
		if e.HeadingDeg, e.HasHeading, err = d.rangeNum(kHeadingDeg, true, 0, 0, 360, false); err != nil {
			return err
		}
		e.Status, err = d.enum(kStatus, true, patrolStatus)
	case TypePatrolStatus:
		if e.DispatchID, err = d.reqStr(kDispatchID, maxIDRunes); err != nil {
			return err
		}
		e.Status, err = d.enum(kStatus, true, answerStatus)
	}
	if err != nil {
		return err
	}
	return d.buildAttrs(e)
}

// personalKey returns "buyer_id" or "buyer_name" if name is one of them
// in any case, and "" otherwise.
func personalKey(name string) string {
	switch {
	case len(name) == len("buyer_id") && strings.EqualFold(name, "buyer_id"):
		return "buyer_id"
	case len(name) == len("buyer_name") && strings.EqualFold(name, "buyer_name"):
		return "buyer_name"
	}
	return ""
}

func personalWhere(normalized bool, t Type) string {
	if normalized {
		return "normalised event"
	}
	return t.String() + " event"
}

func (d *Decoder) time(e *Event) error {
	ts, ok, err := d.str(kTime)
	if err != nil {
		return err
	}
	if !ok {
		return missingField("time")
	}
	tm, ok := parseTime(ts)
	if !ok {
		return &Error{Code: CodeBadFormat, Field: "time", Reason: quoteValue(ts) + " is not an RFC 3339 time with offset"}
	}
	if tm.Before(minTime) {
		return outOfRange("time", quoteValue(ts)+" is before 2000")
	}
	if !d.normalized {
		now := time.Now
		if d.Now != nil {
			now = d.Now
		}
		maxFuture := d.MaxFuture
		if maxFuture <= 0 {
			maxFuture = DefaultMaxFuture
		}
		if ahead := tm.Sub(now()); ahead > maxFuture {
			return &Error{Code: CodeFuture, Field: "time", Reason: ahead.Truncate(time.Millisecond).String() + " in the future, limit " + maxFuture.String()}
		}
	}
	e.Time = tm
	return nil
}

// detection fills the fields that camera and drone detections share.
func (d *Decoder) detection(e *Event) (err error) {
	if e.Object, err = d.enum(kObject, true, objects); err != nil {
		return err
	}
	if e.Behavior, err = d.enum(kBehavior, false, behaviors); err != nil {
		return err
	}
	if e.Count, err = d.integer(kCount, false, 1); err != nil {
		return err
	}
	if err = d.plate(e, false); err != nil {
		return err
	}
	if e.PlateColor, err = d.enum(kPlateColor, false, plateColors); err != nil {
		return err
	}
	if e.Confidence, _, err = d.rangeNum(kConfidence, false, 1, 0, 1, false); err != nil {
		return err
	}
	e.TrackID, err = d.optStr(kTrackID, maxIDRunes)
	return err
}

func (d *Decoder) checkpoint(e *Event) (err error) {
	if e.Lane, err = d.integer(kLane, true, 0); err != nil {
		return err
	}
	if err = d.plate(e, true); err != nil {
		return err
	}
	if e.PlateColor, err = d.enum(kPlateColor, true, plateColors); err != nil {
		return err
	}
	if e.VehicleType, err = d.enum(kVehicleType, true, vehicleTypes); err != nil {
		return err
	}
	if e.VehicleColor, err = d.optStr(kVehicleColor, 0); err != nil {
		return err
	}
	if e.SpeedKmh, _, err = d.rangeNum(kSpeedKmh, true, 0, 0, inf, false); err != nil {
		return err
	}
	if e.HeadingDeg, e.HasHeading, err = d.rangeNum(kHeadingDeg, false, 0, 0, 360, false); err != nil {
		return err
	}
	e.Confidence, _, err = d.rangeNum(kConfidence, false, 1, 0, 1, false)
	return err
}

// plate sets Plate and PlateValid. A required plate may be "" but must be
// there; an optional "" plate is absent. In the normalised form plate_valid
// comes with every plate and must agree with it.
func (d *Decoder) plate(e *Event, required bool) error {
	p, ok, err := d.str(kPlate)
	if err != nil {
		return err
	}
	if !ok && required {
		return missingField("plate")
	}
	present := ok && (required || p != "")
	if present {
		if len(p) > maxPlateRunes && utf8.RuneCountInString(p) > maxPlateRunes {
			return outOfRange("plate", "longer than "+strconv.Itoa(maxPlateRunes)+" characters")
		}
		e.Plate, e.PlateValid = NormalizePlate(p)
	}
	if !d.normalized {
		return nil
	}
	valid, ok, err := d.boolean(kPlateValid)
	switch {
	case err != nil:
		return err
	case present && !ok:
		return missingField("plate_valid")
	case valid != e.PlateValid:
		return outOfRange("plate_valid", strconv.FormatBool(valid)+" does not agree with the plate")
	}
	return nil
}

func (d *Decoder) fuel(e *Event) (err error) {
	if e.StationID, err = d.reqStr(kStationID, maxIDRunes); err != nil {
		return err
	}
	if d.normalized {
		if e.BuyerPseudonym, err = d.reqStr(kBuyerPseudonym, maxIDRunes); err != nil {
			return err
		}
		if e.BuyerIDMasked, err = d.reqStr(kBuyerIDMasked, 32); err != nil {
			return err
		}
		if _, check := idCheck(e.BuyerIDMasked); check {
			return &Error{Code: CodePersonalField, Field: "buyer_id_masked", Reason: "holds an unmasked ID number"}
		}
		if e.BuyerNameMasked, err = d.reqStr(kBuyerNameMasked, maxNameRunes); err != nil {
			return err
		}
	} else {
		id, ok, err := d.str(kBuyerID)
		if err != nil {
			return err
		}
		if !ok {
			return missingField("buyer_id")
		}
		format, check := idCheck(id)
		switch {
		case !format:
			return &Error{Code: CodeBadFormat, Field: "buyer_id", Reason: "must be 18 characters: 17 digits then a digit or X"}
		case !check:
			return &Error{Code: CodeCheckDigit, Field: "buyer_id", Reason: "wrong check digit"}
		}
		e.BuyerID, _ = NormalizeIDNumber(id)
		name, ok, err := d.str(kBuyerName)
		if err != nil {
			return err
		}
		if !ok {
			return missingField("buyer_name")
		}
		if name == "" || len(name) > maxNameRunes && utf8.RuneCountInString(name) > maxNameRunes {
			return outOfRange("buyer_name", "must have 1 to "+strconv.Itoa(maxNameRunes)+" characters")
		}
		e.BuyerName = name
	}
	if err = d.plate(e, false); err != nil {
		return err
	}
	if e.Fuel, err = d.enum(kFuel, true, fuels); err != nil {
		return err
	}
	if e.Container, err = d.enum(kContainer, true, containers); err != nil {
		return err
	}
	if e.VolumeL, _, err = d.rangeNum(kVolumeL, true, 0, 0, inf, true); err != nil {
		return err
	}
	e.PermitNo, err = d.optStr(kPermitNo, maxIDRunes)
	return err
}

func (d *Decoder) telemetry(e *Event) (err error) {
	if e.MissionID, err = d.reqStr(kMissionID, maxIDRunes); err != nil {
		return err
	}
	if e.AltM, _, err = d.rangeNum(kAltM, true, 0, -inf, inf, false); err != nil {
		return err
	}
	if e.HeadingDeg, e.HasHeading, err = d.rangeNum(kHeadingDeg, true, 0, 0, 360, false); err != nil {
		return err
	}
	if e.SpeedMs, _, err = d.rangeNum(kSpeedMs, true, 0, 0, inf, false); err != nil {
		return err
	}
	e.BatteryPct, _, err = d.rangeNum(kBatteryPct, true, 0, 0, 100, false)
	return err
}

// buildAttrs collects the members that are not fields of e.Type (and, in
// the normalised form, the members of attrs) into e.Attrs, verbatim and in
// message order.
func (d *Decoder) buildAttrs(e *Event) error {
	owned := typeKeys[e.Type]
	if d.normalized {
		owned |= normKeys[e.Type]
	}
	s := d.msg
	b := e.Attrs[:0]
	first := true
	add := func(m *member) {
		if first {
			b = append(b, '{')
			first = false
		} else {
			b = append(b, ',')
		}
		b = append(b, s[m.keyStart:m.keyEnd]...)
		b = append(b, ':')
		b = append(b, s[m.valStart:m.valEnd]...)
	}
	for i := range d.top.list {
		m := &d.top.list[i]
		if m.key != kUnknown && owned&(1<<m.key) != 0 {
			if m.key == kAttrs && m.kind != kindNull {
				if m.kind != kindObject {
					return wrongType("attrs", "object", m.kind)
				}
				for j := range d.attrs.list {
					a := &d.attrs.list[j]
					if k := personalKey(d.name(a)); k != "" {
						return &Error{Code: CodePersonalField, Field: "attrs", Reason: "holds " + k}
					}
					add(a)
				}
			}
			continue
		}
		n := d.name(m)
		if k := personalKey(n); k != "" {
			return &Error{Code: CodePersonalField, Field: k, Reason: "not allowed in a " + personalWhere(d.normalized, e.Type)}
		}
		if d.normalized && len(d.attrs.list) > 0 && !d.attrs.add(n) {
			return malformedAt(int(m.keyStart), "key "+quoteValue(n)+" both in attrs and beside it")
		}
		add(m)
	}
	if !first {
		b = append(b, '}')
	}
	e.Attrs = b
	return nil
}
