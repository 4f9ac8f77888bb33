package simulators

import (
	"bytes"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// Load produces unique, valid events of every type as cheaply as possible,
// for load runs: a Generator makes a set of templates once, and each
// message is a template with a fresh id and the current time patched in.
// It is not safe for concurrent use; give each producing goroutine its own.
type Load struct {
	templates []loadTemplate
	prefix    string
	run       string
	n         uint64
	next      int
	lastMs    int64
	timeBuf   []byte
}

type loadTemplate struct {
	topic string
	key   []byte
	// value = pre + id + mid + time + post
	pre, mid, post []byte
}

// NewLoad returns a load source whose ids start with run (unique per run
// and per goroutine), writing to topics named with prefix.
func NewLoad(seed uint64, prefix, run string) *Load {
	g := NewGenerator(GeneratorConfig{Seed: seed})
	l := &Load{prefix: prefix, run: run}
	for len(l.templates) < 2000 {
		m := g.Next()
		v := m.Value
		idAt := bytes.Index(v, []byte(`"id":"`)) + len(`"id":"`)
		idEnd := idAt + bytes.IndexByte(v[idAt:], '"')
		tAt := bytes.Index(v, []byte(`"time":"`)) + len(`"time":"`)
		tEnd := tAt + bytes.IndexByte(v[tAt:], '"')
		if idAt < len(`"id":"`) || tAt < len(`"time":"`) || tAt < idEnd {
			continue
		}
		l.templates = append(l.templates, loadTemplate{
			topic: prefix + m.Topic,
			key:   m.Key,
			pre:   v[:idAt],
			mid:   v[idEnd:tAt],
			post:  v[tEnd:],
		})
	}
	return l
}

// Append appends n messages with device time now to dst, writing their
// bytes into arena; it returns both. The messages point into arena, so the
// caller reuses arena only after the messages are written.
func (l *Load) Append(dst []kafka.Message, arena []byte, now time.Time, n int) ([]kafka.Message, []byte) {
	if ms := now.UnixMilli(); ms != l.lastMs || l.timeBuf == nil {
		l.lastMs = ms
		l.timeBuf = now.In(shanghai).AppendFormat(l.timeBuf[:0], "2006-01-02T15:04:05.000Z07:00")
	}
	for range n {
		t := &l.templates[l.next]
		l.next = (l.next + 1) % len(l.templates)
		l.n++
		start := len(arena)
		arena = append(arena, t.pre...)
		arena = append(arena, l.run...)
		arena = append(arena, '-')
		arena = strconv.AppendUint(arena, l.n, 36)
		arena = append(arena, t.mid...)
		arena = append(arena, l.timeBuf...)
		arena = append(arena, t.post...)
		dst = append(dst, kafka.Message{Topic: t.topic, Key: t.key, Value: arena[start:len(arena):len(arena)]})
	}
	return dst, arena
}

// Count returns how many messages Append has made.
func (l *Load) Count() uint64 { return l.n }
