package rules

import (
	"fmt"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"

	"citywatch/event"
)

// exprEnv is what a filter expression sees: the event's fields under their
// wire names (CONTRACT.md section 2), buyer for the buyer's pseudonym, and
// the local hour, minute and weekday (0 = Sunday) of the event time in the
// configured time zone. Fields a type does not have are zero.
type exprEnv struct {
	ID           string  `expr:"id"`
	Type         string  `expr:"type"`
	DeviceID     string  `expr:"device_id"`
	Lat          float64 `expr:"lat"`
	Lon          float64 `expr:"lon"`
	CameraClass  string  `expr:"camera_class"`
	Object       string  `expr:"object"`
	Behavior     string  `expr:"behavior"`
	Count        int     `expr:"count"`
	TrackID      string  `expr:"track_id"`
	AltM         float64 `expr:"alt_m"`
	Plate        string  `expr:"plate"`
	PlateValid   bool    `expr:"plate_valid"`
	PlateColor   string  `expr:"plate_color"`
	Confidence   float64 `expr:"confidence"`
	Status       string  `expr:"status"`
	Detail       string  `expr:"detail"`
	Lane         int     `expr:"lane"`
	VehicleType  string  `expr:"vehicle_type"`
	VehicleColor string  `expr:"vehicle_color"`
	SpeedKmh     float64 `expr:"speed_kmh"`
	HeadingDeg   float64 `expr:"heading_deg"`
	StationID    string  `expr:"station_id"`
	Buyer        string  `expr:"buyer"`
	Fuel         string  `expr:"fuel"`
	Container    string  `expr:"container"`
	VolumeL      float64 `expr:"volume_l"`
	PermitNo     string  `expr:"permit_no"`
	MissionID    string  `expr:"mission_id"`
	SpeedMs      float64 `expr:"speed_ms"`
	BatteryPct   float64 `expr:"battery_pct"`
	DispatchID   string  `expr:"dispatch_id"`
	Hour         int     `expr:"hour"`
	Minute       int     `expr:"minute"`
	Weekday      int     `expr:"weekday"`
}

func (x *exprEnv) fill(e *event.Event, loc *time.Location) {
	lt := e.Time.In(loc)
	h, m, _ := lt.Clock()
	*x = exprEnv{
		ID: e.ID, Type: e.Type.String(), DeviceID: e.DeviceID, Lat: e.Lat, Lon: e.Lon,
		CameraClass: e.CameraClass, Object: e.Object, Behavior: e.Behavior, Count: e.Count,
		TrackID: e.TrackID, AltM: e.AltM, Plate: e.Plate, PlateValid: e.PlateValid,
		PlateColor: e.PlateColor, Confidence: e.Confidence, Status: e.Status, Detail: e.Detail,
		Lane: e.Lane, VehicleType: e.VehicleType, VehicleColor: e.VehicleColor,
		SpeedKmh: e.SpeedKmh, HeadingDeg: e.HeadingDeg, StationID: e.StationID,
		Buyer: e.BuyerPseudonym, Fuel: e.Fuel, Container: e.Container, VolumeL: e.VolumeL,
		PermitNo: e.PermitNo, MissionID: e.MissionID, SpeedMs: e.SpeedMs,
		BatteryPct: e.BatteryPct, DispatchID: e.DispatchID,
		Hour: h, Minute: m, Weekday: int(lt.Weekday()),
	}
}

// filter is a compiled boolean expression over exprEnv.
type filter struct {
	src    string
	prog   *vm.Program
	native native // nil unless the whole filter runs natively
}

// compileFilter compiles src; an empty src is a nil filter, which passes
// every event.
func compileFilter(src string) (*filter, error) {
	if src == "" {
		return nil, nil
	}
	fast, comps := fastCompareOptions()
	opts := append([]expr.Option{expr.Env(exprEnv{}), expr.AsBool()}, fast...)
	prog, err := expr.Compile(src, opts...)
	if err != nil {
		return nil, err
	}
	return &filter{src: src, prog: prog, native: nativeOf(prog.Node(), *comps)}, nil
}

// eval runs f on env with the reusable machine m. An expression that
// fails at run time (it cannot, once type-checked, short of a bug in a
// custom function) counts as false and is returned.
func (f *filter) eval(m *vm.VM, env *exprEnv) (bool, error) {
	if f.native != nil {
		return f.native(env), nil
	}
	out, err := m.Run(f.prog, env)
	if err != nil {
		return false, fmt.Errorf("cannot evaluate filter %q: %w", f.src, err)
	}
	b, _ := out.(bool)
	return b, nil
}
