package store

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"citywatch/event"
)

// Batch holds rows for every table until they are inserted; not safe for
// concurrent use.
//
// Rows are kept column by column, as ClickHouse stores them, so that Insert
// hands each column to the driver in one call. Adding a row copies the
// bytes it needs (Attrs, Key, Payload) into the batch's own buffer and keeps
// the Go strings of the event as they are (strings are immutable). After the
// first few batches, with Reset between them, adding a row allocates nothing.
type Batch struct {
	events   eventRows
	fuel     fuelRows
	health   healthRows
	rejected rejectedRows
	// buf holds copies of the byte slices of added rows; the [][]byte
	// columns point into it. It only grows by append, so a slice taken
	// before a reallocation still points at valid (older) memory.
	buf []byte
}

// maxKeptBuf is the largest byte buffer Reset keeps for the next batch; a
// batch that needed more (huge DLQ payloads) gives its buffer back to the
// garbage collector rather than holding it for ever.
const maxKeptBuf = 64 << 20

// NewBatch returns an empty batch.
func NewBatch() *Batch {
	return &Batch{}
}

// AddEvent adds e to the table of its type: fuel.purchase to
// fuel_purchases, camera.health and device.heartbeat to device_health, every
// other type to events. ingestedAt is when the sink stored it (the version
// of the row among replayed copies). An event of TypeUnknown is stored in
// events with an empty type, so that nothing handed to the store vanishes.
//
// Fuel purchases are stored with BuyerPseudonym and the masked forms only:
// BuyerID and BuyerName are never read, whatever they hold.
//
// The caller may reuse e, including e.Attrs, as soon as AddEvent returns.
func (b *Batch) AddEvent(e *event.Event, ingestedAt time.Time) {
	sec, ms := splitTime(e.Time)
	ing, _ := splitTime(ingestedAt)
	switch e.Type {
	case event.TypeFuelPurchase:
		r := &b.fuel
		r.id = append(r.id, e.ID)
		r.deviceID = append(r.deviceID, e.DeviceID)
		r.time = append(r.time, sec)
		r.timeMs = append(r.timeMs, ms)
		r.lat = append(r.lat, e.Lat)
		r.lon = append(r.lon, e.Lon)
		r.stationID = append(r.stationID, e.StationID)
		r.buyerPseudonym = append(r.buyerPseudonym, e.BuyerPseudonym)
		r.buyerIDMasked = append(r.buyerIDMasked, e.BuyerIDMasked)
		r.buyerNameMasked = append(r.buyerNameMasked, e.BuyerNameMasked)
		r.plate = append(r.plate, e.Plate)
		r.plateValid = append(r.plateValid, boolUint8(e.PlateValid))
		r.plateColor = append(r.plateColor, e.PlateColor)
		r.fuel = append(r.fuel, e.Fuel)
		r.container = append(r.container, e.Container)
		r.volumeL = append(r.volumeL, e.VolumeL)
		r.permitNo = append(r.permitNo, e.PermitNo)
		r.attrs = append(r.attrs, b.copyBytes(e.Attrs))
		r.ingestedAt = append(r.ingestedAt, ing)
		r.n++
	case event.TypeCameraHealth, event.TypeDeviceHeartbeat:
		r := &b.health
		r.id = append(r.id, e.ID)
		r.typ = append(r.typ, e.Type.String())
		r.deviceID = append(r.deviceID, e.DeviceID)
		r.time = append(r.time, sec)
		r.timeMs = append(r.timeMs, ms)
		r.lat = append(r.lat, e.Lat)
		r.lon = append(r.lon, e.Lon)
		r.status = append(r.status, e.Status)
		r.detail = append(r.detail, e.Detail)
		r.attrs = append(r.attrs, b.copyBytes(e.Attrs))
		r.ingestedAt = append(r.ingestedAt, ing)
		r.n++
	default:
		r := &b.events
		r.id = append(r.id, e.ID)
		r.typ = append(r.typ, e.Type.String())
		r.deviceID = append(r.deviceID, e.DeviceID)
		r.time = append(r.time, sec)
		r.timeMs = append(r.timeMs, ms)
		r.lat = append(r.lat, e.Lat)
		r.lon = append(r.lon, e.Lon)
		r.cameraClass = append(r.cameraClass, e.CameraClass)
		r.object = append(r.object, e.Object)
		r.behavior = append(r.behavior, e.Behavior)
		r.count = append(r.count, uint32(clamp(int64(e.Count), math.MaxUint32)))
		r.trackID = append(r.trackID, e.TrackID)
		r.altM = append(r.altM, e.AltM)
		r.plate = append(r.plate, e.Plate)
		r.plateValid = append(r.plateValid, boolUint8(e.PlateValid))
		r.plateColor = append(r.plateColor, e.PlateColor)
		r.confidence = append(r.confidence, e.Confidence)
		r.status = append(r.status, e.Status)
		r.lane = append(r.lane, uint16(clamp(int64(e.Lane), math.MaxUint16)))
		r.vehicleType = append(r.vehicleType, e.VehicleType)
		r.vehicleColor = append(r.vehicleColor, e.VehicleColor)
		r.speedKmh = append(r.speedKmh, e.SpeedKmh)
		r.headingDeg = append(r.headingDeg, e.HeadingDeg)
		r.hasHeading = append(r.hasHeading, boolUint8(e.HasHeading))
		r.missionID = append(r.missionID, e.MissionID)
		r.speedMs = append(r.speedMs, e.SpeedMs)
		r.batteryPct = append(r.batteryPct, e.BatteryPct)
		r.dispatchID = append(r.dispatchID, e.DispatchID)
		r.attrs = append(r.attrs, b.copyBytes(e.Attrs))
		r.ingestedAt = append(r.ingestedAt, ing)
		r.n++
	}
}

// AddRejected adds one rejected input record (a DLQ message). The caller
// may reuse r.Key and r.Payload as soon as AddRejected returns.
func (b *Batch) AddRejected(r *event.Rejected) {
	t := &b.rejected
	recv, _ := splitTime(r.ReceivedAt)
	t.topic = append(t.topic, r.Topic)
	t.partition = append(t.partition, int32(max(math.MinInt32, min(int64(r.Partition), math.MaxInt32))))
	t.offset = append(t.offset, r.Offset)
	t.key = append(t.key, b.copyBytes(r.Key))
	t.err = append(t.err, r.Error)
	t.code = append(t.code, string(r.Code))
	t.receivedAt = append(t.receivedAt, recv)
	t.payload = append(t.payload, b.copyBytes(r.Payload))
	t.n++
}

// Len returns the number of rows in the batch, over all tables.
func (b *Batch) Len() int {
	return b.events.n + b.fuel.n + b.health.n + b.rejected.n
}

// MaxTableLen returns the number of rows of the table with the most rows.
func (b *Batch) MaxTableLen() int {
	return max(b.events.n, b.fuel.n, b.health.n, b.rejected.n)
}

// Reset empties the batch, keeping the capacity of its columns for the next
// rows.
func (b *Batch) Reset() {
	for _, t := range b.tables() {
		t.reset()
	}
	if cap(b.buf) > maxKeptBuf {
		b.buf = nil
	}
	b.buf = b.buf[:0]
}

// copyBytes returns a copy of p in b's buffer, or nil when p is empty.
func (b *Batch) copyBytes(p []byte) []byte {
	if len(p) == 0 {
		return nil
	}
	start := len(b.buf)
	b.buf = append(b.buf, p...)
	return b.buf[start:len(b.buf):len(b.buf)]
}

// Insert inserts the rows of every non-empty table of b, one INSERT per
// table, and leaves b as it was. Each table is inserted whole or not at all;
// when one fails, the error names it and the tables before it are already
// stored. Inserting the same batch again is safe: the copies collapse (see
// the package documentation), so a caller retries a failed batch as is.
// Insert returns when ctx is done, with an error.
func (db *DB) Insert(ctx context.Context, b *Batch) error {
	for _, t := range b.tables() {
		if err := db.insertRows(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

// insertRows inserts the rows of t, if any, as one INSERT with the
// store's insert settings, naming the table in its error.
func (db *DB) insertRows(ctx context.Context, t rows) error {
	if t.len() == 0 {
		return nil
	}
	if len(db.insertSettings) > 0 {
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(db.insertSettings))
	}
	if err := db.insertTable(ctx, t); err != nil {
		return fmt.Errorf("cannot insert into %s: %w", t.name(), err)
	}
	return nil
}

// insertTable sends the rows of one table as one INSERT.
func (db *DB) insertTable(ctx context.Context, t rows) (err error) {
	cols := t.columns()
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = quoteIdent(c.name)
	}
	query := "INSERT INTO " + db.table(t.name()) + " (" + strings.Join(names, ", ") + ")"
	batch, err := db.conn.PrepareBatch(ctx, query)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// Abort gives the connection back; after a failed Send it
			// only reports that the batch is gone.
			_ = batch.Abort()
		}
	}()
	for i, c := range cols {
		if err := batch.Column(i).Append(c.values()); err != nil {
			return fmt.Errorf("cannot append column %s: %w", c.name, err)
		}
	}
	return batch.Send()
}

// tables lists the tables a Batch fills, in the order Insert inserts them.
func (b *Batch) tables() []rows {
	return []rows{&b.events, &b.fuel, &b.health, &b.rejected}
}

// rows is one table's worth of rows, column by column.
type rows interface {
	name() string
	len() int
	// columns lists the columns in the order of the INSERT statement,
	// each with a pointer to its values.
	columns() []column
	reset()
}

// column is one column of a table: its name and a pointer to the slice of
// its values (*[]string, *[]uint32 and so on), whose element type is the
// one the driver takes for the column's ClickHouse type.
type column struct {
	name string
	data any
}

// values returns the slice of values of c.
func (c column) values() any {
	switch p := c.data.(type) {
	case *[]string:
		return *p
	case *[][]byte:
		return *p
	case *[][]string:
		return *p
	case *[]int64:
		return *p
	case *[]int32:
		return *p
	case *[]uint32:
		return *p
	case *[]uint16:
		return *p
	case *[]uint8:
		return *p
	case *[]float64:
		return *p
	}
	panic(fmt.Sprintf("store: column %s has unsupported data %T", c.name, c.data))
}

// length returns the number of values in c.
func (c column) length() int {
	switch p := c.data.(type) {
	case *[]string:
		return len(*p)
	case *[][]byte:
		return len(*p)
	case *[][]string:
		return len(*p)
	case *[]int64:
		return len(*p)
	case *[]int32:
		return len(*p)
	case *[]uint32:
		return len(*p)
	case *[]uint16:
		return len(*p)
	case *[]uint8:
		return len(*p)
	case *[]float64:
		return len(*p)
	}
	panic(fmt.Sprintf("store: column %s has unsupported data %T", c.name, c.data))
}

// truncate empties c, keeping its capacity.
func (c column) truncate() {
	switch p := c.data.(type) {
	case *[]string:
		clear(*p) // let the garbage collector have the strings
		*p = (*p)[:0]
	case *[][]byte:
		clear(*p)
		*p = (*p)[:0]
	case *[][]string:
		clear(*p)
		*p = (*p)[:0]
	case *[]int64:
		*p = (*p)[:0]
	case *[]int32:
		*p = (*p)[:0]
	case *[]uint32:
		*p = (*p)[:0]
	case *[]uint16:
		*p = (*p)[:0]
	case *[]uint8:
		*p = (*p)[:0]
	case *[]float64:
		*p = (*p)[:0]
	default:
		panic(fmt.Sprintf("store: column %s has unsupported data %T", c.name, c.data))
	}
}

// resetColumns truncates every column of t.
func resetColumns(t rows) {
	for _, c := range t.columns() {
		c.truncate()
	}
}

// eventRows are rows of the events table. DateTime columns hold Unix
// seconds.
type eventRows struct {
	n            int
	id           []string
	typ          []string
	deviceID     []string
	time         []int64
	timeMs       []uint16
	lat          []float64
	lon          []float64
	cameraClass  []string
	object       []string
	behavior     []string
	count        []uint32
	trackID      []string
	altM         []float64
	plate        []string
	plateValid   []uint8
	plateColor   []string
	confidence   []float64
	status       []string
	lane         []uint16
	vehicleType  []string
	vehicleColor []string
	speedKmh     []float64
	headingDeg   []float64
	hasHeading   []uint8
	missionID    []string
	speedMs      []float64
	batteryPct   []float64
	dispatchID   []string
	attrs        [][]byte
	ingestedAt   []int64
}

func (r *eventRows) name() string { return tableEvents }
func (r *eventRows) len() int     { return r.n }
func (r *eventRows) reset()       { resetColumns(r); r.n = 0 }

func (r *eventRows) columns() []column {
	return []column{
		{"id", &r.id},
		{"type", &r.typ},
		{"device_id", &r.deviceID},
		{"time", &r.time},
		{"time_ms", &r.timeMs},
		{"lat", &r.lat},
		{"lon", &r.lon},
		{"camera_class", &r.cameraClass},
		{"object", &r.object},
		{"behavior", &r.behavior},
		{"count", &r.count},
		{"track_id", &r.trackID},
		{"alt_m", &r.altM},
		{"plate", &r.plate},
		{"plate_valid", &r.plateValid},
		{"plate_color", &r.plateColor},
		{"confidence", &r.confidence},
		{"status", &r.status},
		{"lane", &r.lane},
		{"vehicle_type", &r.vehicleType},
		{"vehicle_color", &r.vehicleColor},
		{"speed_kmh", &r.speedKmh},
		{"heading_deg", &r.headingDeg},
		{"has_heading", &r.hasHeading},
		{"mission_id", &r.missionID},
		{"speed_ms", &r.speedMs},
		{"battery_pct", &r.batteryPct},
		{"dispatch_id", &r.dispatchID},
		{"attrs", &r.attrs},
		{"ingested_at", &r.ingestedAt},
	}
}

// fuelRows are rows of the fuel_purchases table. There is deliberately no
// column for the raw buyer ID number or name.
type fuelRows struct {
	n               int
	id              []string
	deviceID        []string
	time            []int64
	timeMs          []uint16
	lat             []float64
	lon             []float64
	stationID       []string
	buyerPseudonym  []string
	buyerIDMasked   []string
	buyerNameMasked []string
	plate           []string
	plateValid      []uint8
	plateColor      []string
	fuel            []string
	container       []string
	volumeL         []float64
	permitNo        []string
	attrs           [][]byte
	ingestedAt      []int64
}

func (r *fuelRows) name() string { return tableFuel }
func (r *fuelRows) len() int     { return r.n }
func (r *fuelRows) reset()       { resetColumns(r); r.n = 0 }

func (r *fuelRows) columns() []column {
	return []column{
		{"id", &r.id},
		{"device_id", &r.deviceID},
		{"time", &r.time},
		{"time_ms", &r.timeMs},
		{"lat", &r.lat},
		{"lon", &r.lon},
		{"station_id", &r.stationID},
		{"buyer_pseudonym", &r.buyerPseudonym},
		{"buyer_id_masked", &r.buyerIDMasked},
		{"buyer_name_masked", &r.buyerNameMasked},
		{"plate", &r.plate},
		{"plate_valid", &r.plateValid},
		{"plate_color", &r.plateColor},
		{"fuel", &r.fuel},
		{"container", &r.container},
		{"volume_l", &r.volumeL},
		{"permit_no", &r.permitNo},
		{"attrs", &r.attrs},
		{"ingested_at", &r.ingestedAt},
	}
}

// healthRows are rows of the device_health table.
type healthRows struct {
	n          int
	id         []string
	typ        []string
	deviceID   []string
	time       []int64
	timeMs     []uint16
	lat        []float64
	lon        []float64
	status     []string
	detail     []string
	attrs      [][]byte
	ingestedAt []int64
}

func (r *healthRows) name() string { return tableHealth }
func (r *healthRows) len() int     { return r.n }
func (r *healthRows) reset()       { resetColumns(r); r.n = 0 }

func (r *healthRows) columns() []column {
	return []column{
		{"id", &r.id},
		{"type", &r.typ},
		{"device_id", &r.deviceID},
		{"time", &r.time},
		{"time_ms", &r.timeMs},
		{"lat", &r.lat},
		{"lon", &r.lon},
		{"status", &r.status},
		{"detail", &r.detail},
		{"attrs", &r.attrs},
		{"ingested_at", &r.ingestedAt},
	}
}

// rejectedRows are rows of the rejected table.
type rejectedRows struct {
	n          int
	topic      []string
	partition  []int32
	offset     []int64
	key        [][]byte
	err        []string
	code       []string
	receivedAt []int64
	payload    [][]byte
}

func (r *rejectedRows) name() string { return tableRejected }
func (r *rejectedRows) len() int     { return r.n }
func (r *rejectedRows) reset()       { resetColumns(r); r.n = 0 }

func (r *rejectedRows) columns() []column {
	return []column{
		{"topic", &r.topic},
		{"partition", &r.partition},
		{"offset", &r.offset},
		{"key", &r.key},
		{"error", &r.err},
		{"code", &r.code},
		{"received_at", &r.receivedAt},
		{"payload", &r.payload},
	}
}

// splitTime returns t as the seconds and milliseconds of a DateTime and a
// time_ms column. DateTime holds 1970 to 2106; an instant outside that
// range is stored at the nearest end rather than wrapped around.
func splitTime(t time.Time) (sec int64, ms uint16) {
	sec = t.Unix()
	switch {
	case sec < 0:
		return 0, 0
	case sec > math.MaxUint32:
		return math.MaxUint32, 999
	}
	return sec, uint16(t.Nanosecond() / int(time.Millisecond))
}

// clamp limits v to 0..hi.
func clamp(v, hi int64) int64 {
	return max(0, min(v, hi))
}

func boolUint8(v bool) uint8 {
	if v {
		return 1
	}
	return 0
}
