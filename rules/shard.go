package rules

import (
	"slices"
	"time"

	"citywatch/event"
)

// Shards says which keys' state an engine holds when the rules role is
// scaled out (RoleConfig.Shards): every key of every rule belongs to one of
// N shards by a stable hash, and an engine evaluates a rule on an event
// only when it owns the shard of the event's key for that rule. The shards
// of a process are those the consumer group assigned it (see Role).
//
// The key of an event for a rule is the subject its state is kept under:
// the plate, buyer pseudonym or device of the rule's key; for a hotlist
// match the plate with OCR look-alikes folded, so that every read within
// an entry's tolerance lands where the listed plate does; for a grouped
// absence rule the device's site, so that a site's devices are watched
// together; for a co-occurrence rule the rule itself, because a pair of
// plates is found by comparing passes across every checkpoint; for a
// geofence rule each zone containing the point (the kind checks each zone
// itself).
type Shards struct {
	owned []bool
}

// NewShards returns n shards of which those listed are owned.
func NewShards(n int, owned []int) *Shards {
	s := &Shards{owned: make([]bool, n)}
	for _, i := range owned {
		if i >= 0 && i < n {
			s.owned[i] = true
		}
	}
	return s
}

// Owns reports whether the shard of key is owned. A nil Shards owns every
// key: one process holds the whole state.
func (s *Shards) Owns(key string) bool {
	if s == nil {
		return true
	}
	return s.owned[ShardOf(key, len(s.owned))]
}

// ShardOf returns the shard of key among n: FNV-1a (32 bits) modulo n,
// stable across processes and releases.
func ShardOf(key string, n int) int { return int(fnv1a(key) % uint32(n)) }

// fnv1a is the 32-bit FNV-1a hash of key.
func fnv1a[K string | []byte](key K) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return h
}

// ownsHash is Owns for a key's hash (shardHash).
func (s *Shards) ownsHash(h uint32) bool {
	return s == nil || s.owned[h%uint32(len(s.owned))]
}

// shardHash returns the hash (fnv1a) of the key of e for rule r (see
// Shards), the key built in buf when it must be, and false when the kind
// decides per key itself or e has no key for the rule (an unreadable
// plate). It is on every event's path: a folded plate is hashed where it
// was built, not made a string.
func (r *rule) shardHash(cfg *Config, e *event.Event, buf []byte) (uint32, bool) {
	switch k := r.kind.(type) {
	case *matchRule:
		key := k.key.get(e)
		if key == "" {
			return 0, false
		}
		if k.list == ListVehicleHotlist {
			return fnv1a(foldLookalikes(buf[:0], key)), true
		}
		return fnv1a(key), true
	case *thresholdRule:
		return keyHash(k.key.get(e))
	case *velocityRule:
		return keyHash(k.key.get(e))
	case *sequenceRule:
		return keyHash(k.key.get(e))
	case *absenceRule:
		if k.group {
			return fnv1a(cfg.Site(e.DeviceID, e.Lat, e.Lon)), true
		}
		return keyHash(k.key.get(e))
	case *coRule:
		return fnv1a(r.id), true
	}
	return 0, false // geofence: per zone, in the kind
}

func keyHash(key string) (uint32, bool) { return fnv1a(key), key != "" }

// alertShardKey returns the key of the state that raised a, by the same
// rules as shardKey, so that a restart reopens only the alerts whose
// state it owns.
func (r *rule) alertShardKey(cfg *Config, a *event.Alert) string {
	switch k := r.kind.(type) {
	case *matchRule:
		if k.list == ListVehicleHotlist {
			var buf [64]byte
			return string(foldLookalikes(buf[:0], a.Subject.ID))
		}
	case *absenceRule:
		if k.group && a.Subject.Kind != event.SubjectArea {
			return cfg.Site(a.Subject.ID, a.Lat, a.Lon)
		}
	case *coRule:
		return r.id
	}
	return a.Subject.ID
}

// ownsAlert reports whether the engine holds the state behind a; alerts of
// rules it does not know are owned by the shard of their subject.
func (e *Engine) ownsAlert(a *event.Alert) bool {
	if e.shards == nil {
		return true
	}
	for _, run := range e.runs {
		if run.r.id == a.Rule {
			return e.shards.Owns(run.r.alertShardKey(&e.cfg, a))
		}
	}
	return e.shards.Owns(a.Subject.ID)
}

// SetShards makes the engine evaluate only the keys of the owned shards;
// nil (the default) evaluates every key. It is set before the first event.
func (e *Engine) SetShards(s *Shards) { e.shards = s }

// owns reports whether the current rule's state for key is the engine's.
func (x *evalCtx) owns(key string) bool { return x.eng.shards.Owns(key) }

// route appends to dst the shards among n that need ev, each once: the
// shard of its key for every rule that reads its type (for a geofence
// rule, of every zone containing the point), as Owns decides them. An
// event no rule reads needs none; it moves only the watermark.
func (e *Engine) route(ev *event.Event, n int, dst []int) []int {
	for _, run := range e.byType[ev.Type&31] {
		if _, ok := run.r.kind.(*geofenceRule); ok {
			if zf := e.cfg.Zones; zf != nil {
				e.zones = zf(e.zones[:0], ev.Lat, ev.Lon)
				for i := range e.zones {
					dst = addShard(dst, ShardOf(e.zones[i].ID, n))
				}
			}
			continue
		}
		if h, ok := run.r.shardHash(&e.cfg, ev, e.shardBuf[:0]); ok {
			dst = addShard(dst, int(h%uint32(n)))
		}
	}
	return dst
}

func addShard(dst []int, s int) []int {
	if slices.Contains(dst, s) {
		return dst
	}
	return append(dst, s)
}

// ProcessStamped evaluates ev, forwarded to a shard with wm (Unix ms) as
// the watermark (see Role, "Scale-out"): the watermark moves to wm first,
// running the timers due, and the event is evaluated even when it is
// older, because the forwarder found it in time. It appends the alert
// messages caused to out.
func (e *Engine) ProcessStamped(now time.Time, ev *event.Event, wm int64, out []event.Alert) []event.Alert {
	e.now, e.out = now, out
	e.installPending()
	e.stamp(wm)
	e.evaluate(ev)
	return e.flushOut()
}

// AdvanceStamped moves the watermark of a forwarded shard to wm, as a
// forwarder's marker says, and appends the alert messages the timers due
// cause to out.
func (e *Engine) AdvanceStamped(now time.Time, wm int64, out []event.Alert) []event.Alert {
	e.now, e.out = now, out
	e.installPending()
	e.stamp(wm)
	return e.flushOut()
}

func (e *Engine) stamp(wm int64) {
	e.driven = true
	if wm <= 0 {
		return
	}
	e.maxEvent = max(e.maxEvent, wm)
	e.setWatermark(wm)
}

// setClock starts a forwarder's clock (see forwarder) at t (Unix ms), the
// time of the input before it, as if that had just arrived at now.
func (e *Engine) setClock(t int64, now time.Time) {
	if t <= e.maxEvent {
		return
	}
	e.maxEvent, e.stream, e.lastInput = t, max(e.stream, t), now
	e.wm = max(e.wm, t-e.cfg.Lateness.Milliseconds())
	e.lastTick = e.wm
}
