package rules

import (
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
func ShardOf(key string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

// shardKey returns the key of e for rule r (see Shards), written into buf
// when it must be built, and false when the kind decides per key itself or
// e has no key for the rule (an unreadable plate).
func (r *rule) shardKey(cfg *Config, e *event.Event, buf []byte) (string, bool) {
	switch k := r.kind.(type) {
	case *matchRule:
		key := k.key.get(e)
		if k.list == ListVehicleHotlist {
			key = string(foldLookalikes(buf[:0], key))
		}
		return key, key != ""
	case *thresholdRule:
		key := k.key.get(e)
		return key, key != ""
	case *velocityRule:
		key := k.key.get(e)
		return key, key != ""
	case *sequenceRule:
		key := k.key.get(e)
		return key, key != ""
	case *absenceRule:
		if k.group {
			return cfg.Site(e.DeviceID, e.Lat, e.Lon), true
		}
		key := k.key.get(e)
		return key, key != ""
	case *coRule:
		return r.id, true
	}
	return "", false // geofence: per zone, in the kind
}

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
