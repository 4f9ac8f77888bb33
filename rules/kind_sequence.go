package rules

import (
	"time"

	"citywatch/event"
)

// SequenceSpec is a sequence rule: for one key, events matching step A,
// then B (then C …), in event-time order, all within a time bound.
//
//	sequence:
//	  key: plate
//	  within: 30m
//	  steps:
//	    - {name: enters, types: [checkpoint.pass], filter: 'device_id == "kk-001"'}
//	    - {name: leaves, types: [checkpoint.pass], filter: 'device_id == "kk-009"'}
//
// Each key follows one partial match. While only the first step has
// matched, a newer first-step event restarts it (the latest start has the
// most time left); once later steps have matched, the partial match runs
// until it completes or its time runs out. Events arriving out of order are
// taken in arrival order, except that a step never matches an event older
// than the step before it.
type SequenceSpec struct {
	// Key is device (default), plate, buyer or station.
	Key    string        `yaml:"key"`
	Within time.Duration `yaml:"within"`
	Steps  []StepSpec    `yaml:"steps"`
}

// StepSpec is one step of a sequence.
type StepSpec struct {
	Name   string   `yaml:"name"`
	Types  []string `yaml:"types"`
	Filter string   `yaml:"filter"`
}

// maxSteps bounds the steps of a sequence.
const maxSteps = 8

type sequenceRule struct {
	key    keyField
	within int64
	steps  []seqStep
}

type seqStep struct {
	name   string
	types  uint32
	filter *filter
}

func (s *SequenceSpec) compile() (kindSpec, error) {
	k, err := compileKey(s.Key, "device")
	if err != nil {
		return nil, err
	}
	if err := durationField("within", s.Within); err != nil {
		return nil, err
	}
	if len(s.Steps) < 2 || len(s.Steps) > maxSteps {
		return nil, &fieldError{field: "steps", msg: "must have 2–8 steps"}
	}
	r := &sequenceRule{key: k, within: s.Within.Milliseconds()}
	for i, st := range s.Steps {
		step := seqStep{name: st.Name}
		if step.name == "" {
			step.name = string(rune('A' + i))
		}
		if len(st.Types) == 0 {
			step.types = ^uint32(0)
		}
		for _, name := range st.Types {
			t := event.ParseType(name)
			if t == event.TypeUnknown {
				return nil, &fieldError{field: "steps[" + itoa(i) + "].types", msg: "unknown event type " + quote(name)}
			}
			step.types |= 1 << t
		}
		if step.filter, err = compileFilter(st.Filter); err != nil {
			return nil, &fieldError{field: "steps[" + itoa(i) + "].filter", msg: oneLine(err.Error())}
		}
		r.steps = append(r.steps, step)
	}
	return r, nil
}

func (r *sequenceRule) window() time.Duration { return time.Duration(r.within) * time.Millisecond }

func (r *sequenceRule) newState(cfg *Config) kindState {
	return &sequenceState{r: r, keys: newTable[partial](cfg.MaxKeys)}
}

// partial is one key's match in progress: next is the step it waits for.
type partial struct {
	next  int
	start int64
	last  int64
	ids   [maxSteps][]byte
}

type sequenceState struct {
	r    *sequenceRule
	keys *table[partial]
}

func (s *sequenceState) size() (int, int, uint64) {
	return s.keys.len(), s.keys.bytes(), s.keys.evicted
}

func (s *sequenceState) tick(x *evalCtx) {
	s.keys.expire(x.wm()-s.r.within, nil)
}

func (s *sequenceState) matches(x *evalCtx, i int, e *event.Event) bool {
	st := &s.r.steps[i]
	return st.types&(1<<e.Type) != 0 && x.eval(st.filter, e)
}

func (s *sequenceState) process(x *evalCtx, e *event.Event) {
	r := s.r
	key := r.key.get(e)
	if key == "" {
		return
	}
	t := e.Time.UnixMilli()
	p, ok := s.keys.get(key)
	if ok && p.next > 0 && t-p.start > r.within && t >= p.start {
		p.next = 0 // ran out of time
	}
	if ok && p.next > 0 && t >= p.last && s.matches(x, p.next, e) {
		p.ids[p.next] = append(p.ids[p.next][:0], e.ID...)
		p.last = t
		p.next++
		s.keys.touch(key, t)
		if p.next == len(r.steps) {
			s.raise(x, e, key, p)
			p.next = 0
		}
		return
	}
	if (!ok || p.next <= 1) && s.matches(x, 0, e) {
		if ok && p.next == 1 && t < p.start {
			return // an older start than the one held
		}
		p, _ = s.keys.touch(key, t)
		p.next, p.start, p.last = 1, t, t
		p.ids[0] = append(p.ids[0][:0], e.ID...)
	}
}

func (s *sequenceState) raise(x *evalCtx, e *event.Event, key string, p *partial) {
	ev := make([]string, len(s.r.steps))
	names := make([]string, len(s.r.steps))
	for i := range s.r.steps {
		ev[i] = string(p.ids[i])
		names[i] = s.r.steps[i].name
	}
	x.raise(&hit{
		subject:  event.Subject{Kind: s.r.key.subject, ID: key},
		e:        e,
		evidence: ev,
		details: []event.Detail{
			{Name: "steps", Value: names},
			{Name: "seconds", Value: roundTo(float64(p.last-p.start)/1000, 1)},
		},
	})
}
