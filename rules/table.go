package rules

import (
	"strings"
	"unsafe"
)

// table is a bounded map from key to V, with its entries on a list in
// the order they were last touched (oldest first), which serves both as
// an LRU for the size bound and as a time index for expiry: touch moves an
// entry to the back and raises its last-event time, so the front holds the
// entries that heard nothing for longest. Events that arrive out of order
// (within the lateness) leave the list only approximately sorted by time;
// expiry then comes up to one lateness late, never early.
//
// Entries live in one slice linked by index, so that the table holds few
// pointers for the garbage collector and a freed entry is reused without
// allocation. Pointers returned by get and touch are valid until the next
// call that adds an entry.
type table[V any] struct {
	index   map[string]int32
	nodes   []node[V]
	head    int32 // oldest; -1 when empty
	tail    int32 // newest
	free    int32 // free list through next; -1 when none
	max     int
	evicted uint64
	// keyBytes is the total length of the keys held, for the size
	// estimate.
	keyBytes int
	// onEvict, when set, sees an entry evicted for room before it is
	// dropped (not one removed by expire).
	onEvict func(key string, v *V)
}

type node[V any] struct {
	key        string
	prev, next int32
	last       int64 // highest event time (Unix ms) that touched it
	val        V
}

func newTable[V any](max int) *table[V] {
	return &table[V]{index: make(map[string]int32), head: -1, tail: -1, free: -1, max: max}
}

// len returns the number of entries.
func (t *table[V]) len() int { return len(t.index) }

// bytes estimates the memory the table holds: entries, map slots and keys.
// V's own heap memory is not included; kinds add it.
func (t *table[V]) bytes() int {
	var n node[V]
	// A map slot holds a string header and an int32, with control bytes
	// and a load factor of 7/8.
	const slot = (16 + 4 + 4 + 1) * 8 / 7
	return cap(t.nodes)*int(unsafe.Sizeof(n)) + len(t.index)*slot + t.keyBytes
}

// get returns the entry of key without touching it.
func (t *table[V]) get(key string) (*V, bool) {
	i, ok := t.index[key]
	if !ok {
		return nil, false
	}
	return &t.nodes[i].val, true
}

// touch returns the entry of key, adding a zero one when missing (and
// evicting the oldest entry if the table is full), moves it to the back
// and raises its last-event time to ts. The key is copied when added, so
// callers may pass strings that share memory with a decoded message.
func (t *table[V]) touch(key string, ts int64) (v *V, added bool) {
	i, added := t.touchEntry(key, ts)
	return &t.nodes[i].val, added
}

// touchEntry is touch returning the entry's index in nodes, for state
// that refers to entries by index.
func (t *table[V]) touchEntry(key string, ts int64) (i int32, added bool) {
	if i, ok := t.index[key]; ok {
		n := &t.nodes[i]
		if ts > n.last {
			n.last = ts
		}
		t.moveBack(i)
		return i, false
	}
	if len(t.index) >= t.max && t.head >= 0 {
		h := t.head
		if t.onEvict != nil {
			t.onEvict(t.nodes[h].key, &t.nodes[h].val)
		}
		t.remove(h)
		t.evicted++
	}
	if t.free >= 0 {
		i = t.free
		t.free = t.nodes[i].next
	} else {
		t.nodes = append(t.nodes, node[V]{})
		i = int32(len(t.nodes) - 1)
	}
	k := strings.Clone(key)
	t.nodes[i] = node[V]{key: k, prev: -1, next: -1, last: ts}
	t.index[k] = i
	t.keyBytes += len(k)
	t.pushBack(i)
	return i, true
}

func (t *table[V]) pushBack(i int32) {
	n := &t.nodes[i]
	n.prev, n.next = t.tail, -1
	if t.tail >= 0 {
		t.nodes[t.tail].next = i
	} else {
		t.head = i
	}
	t.tail = i
}

func (t *table[V]) unlink(i int32) {
	n := &t.nodes[i]
	if n.prev >= 0 {
		t.nodes[n.prev].next = n.next
	} else {
		t.head = n.next
	}
	if n.next >= 0 {
		t.nodes[n.next].prev = n.prev
	} else {
		t.tail = n.prev
	}
}

func (t *table[V]) moveBack(i int32) {
	if t.tail == i {
		return
	}
	t.unlink(i)
	t.pushBack(i)
}

// remove drops entry i and puts it on the free list.
func (t *table[V]) remove(i int32) {
	t.unlink(i)
	n := &t.nodes[i]
	delete(t.index, n.key)
	t.keyBytes -= len(n.key)
	*n = node[V]{prev: -1, next: t.free}
	t.free = i
}

// delete drops the entry of key, if any.
func (t *table[V]) delete(key string) {
	if i, ok := t.index[key]; ok {
		t.remove(i)
	}
}

// expire visits the entries whose last-event time is before cutoff,
// oldest first, and removes those for which keep returns false (all of
// them when keep is nil). It stops at the first entry not before cutoff.
func (t *table[V]) expire(cutoff int64, keep func(key string, last int64, v *V) bool) {
	for i := t.head; i >= 0; {
		n := &t.nodes[i]
		if n.last >= cutoff {
			return
		}
		next := n.next
		if keep == nil || !keep(n.key, n.last, &n.val) {
			t.remove(i)
		}
		i = next
	}
}

// each visits every entry, oldest first.
func (t *table[V]) each(fn func(key string, last int64, v *V)) {
	for i := t.head; i >= 0; i = t.nodes[i].next {
		n := &t.nodes[i]
		fn(n.key, n.last, &n.val)
	}
}
