package viid

import (
	"bytes"
	"encoding/json"
	"math/bits"
	"unicode/utf8"

	"citywatch/event"
)

// fieldSet is the member names a record type reads, in the order its
// absent method numbers them, with their letter masks.
type fieldSet struct {
	names []string
	masks []uint64
}

func newFieldSet(names ...string) fieldSet {
	fs := fieldSet{names: names, masks: make([]uint64, len(names))}
	for i, n := range names {
		fs.masks[i] = letterMask([]byte(n))
	}
	return fs
}

// known reports whether key names one of the fields, without regard to
// case, as encoding/json matches them.
func (fs fieldSet) known(key []byte) bool {
	for _, f := range fs.names {
		if len(f) == len(key) && foldDistance(key, f, 0) == 0 {
			return true
		}
	}
	return false
}

// letterMask is the set of the bytes of s, case folded, each as one of 64
// bits. An edit adds or removes at most two members of the set (a swap
// none), and bytes sharing a bit only make sets look closer, so names
// whose masks differ in more than 2·limit bits are further apart than
// limit: a test far cheaper than the distance itself.
func letterMask(s []byte) uint64 {
	var m uint64
	for _, c := range s {
		m |= 1 << (lower(c) & 63)
	}
	return m
}

// maxMisspelt bounds the misspellings noted per record.
const maxMisspelt = 4

// findMisspelt appends to dst the members of the record obj that are not
// fields of fs but within a typo of a field in absent (indexes into fs):
// a vendor's "PassTimme" or "Speeed", which encoding/json skips as it
// skips the many GA/T 1400 fields the receiver does not read. Only absent
// fields are looked for, since a field that is set was not misspelt, and
// a complete record costs no scan. The distance allowed is small enough
// that GA/T 1400's own neighbours (DisappearTime, PlateClass,
// VehicleColorDepth) are not taken for typos.
func findMisspelt(obj []byte, fs fieldSet, absent uint32, dst []misspelling) []misspelling {
	if absent == 0 {
		return dst
	}
	var sc keyScanner
	if !sc.init(obj) {
		return dst
	}
	for len(dst) < maxMisspelt {
		key, ok := sc.next()
		if !ok {
			break
		}
		if bytes.IndexByte(key, '\\') >= 0 {
			key = unescapeKey(key)
		}
		km := letterMask(key)
		for i, f := range fs.names {
			if absent&(1<<i) == 0 {
				continue
			}
			limit := 2
			if len(f) <= 5 {
				limit = 1
			}
			if bits.OnesCount64(km^fs.masks[i]) > 2*limit {
				continue
			}
			if d := foldDistance(key, f, limit); d > 0 && d <= limit && !fs.known(key) {
				dst = append(dst, misspelling{member: keyString(key), field: f})
				break
			}
		}
	}
	return dst
}

// unescapeKey decodes a member name with escapes (rare: "Sp\u0065ed"),
// as encoding/json does before it matches the name.
func unescapeKey(raw []byte) []byte {
	var s string
	if json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &s) != nil {
		return raw
	}
	return []byte(s)
}

// keyString returns a member name as text for a reason or a log.
func keyString(key []byte) string {
	if !utf8.Valid(key) {
		return "(not UTF-8)"
	}
	return shorten(string(key))
}

// foldDistance is the optimal-string-alignment distance (edits, and
// swaps of neighbours) between a and b with ASCII letters folded to lower
// case, or limit+1 as soon as it is known to exceed limit. Names longer
// than 32 bytes are never close.
func foldDistance(a []byte, b string, limit int) int {
	const maxLen = 32
	if len(a) > maxLen || len(b) > maxLen || abs(len(a)-len(b)) > limit {
		return limit + 1
	}
	// Three rows of the dynamic programme: i-2, i-1, i. Bytes: distances
	// stay within 32.
	var rows [3][maxLen + 1]uint8
	prev2, prev, cur := &rows[0], &rows[1], &rows[2]
	for j := 0; j <= len(b); j++ {
		prev[j] = uint8(j)
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = uint8(i)
		lowest := cur[0]
		ca := lower(a[i-1])
		for j := 1; j <= len(b); j++ {
			cb := lower(b[j-1])
			cost := uint8(1)
			if ca == cb {
				cost = 0
			}
			v := min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ca == lower(b[j-2]) && lower(a[i-2]) == cb {
				v = min(v, prev2[j-2]+1)
			}
			cur[j] = v
			lowest = min(lowest, v)
		}
		if int(lowest) > limit {
			return limit + 1
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return int(prev[len(b)])
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// keyScanner walks the member names of a JSON object without decoding
// the values. The record has been through json.Unmarshal, so it is valid
// JSON; the scanner still stops, rather than fails, on anything else.
type keyScanner struct {
	b []byte
	i int
}

func (s *keyScanner) init(obj []byte) bool {
	s.b, s.i = obj, 0
	s.space()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return false
	}
	s.i++
	return true
}

// next returns the next member name as it stands between its quotes.
func (s *keyScanner) next() ([]byte, bool) {
	for s.i < len(s.b) && (isSpace(s.b[s.i]) || s.b[s.i] == ',') {
		s.i++
	}
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	end := stringEnd(s.b, s.i)
	if end > len(s.b) {
		return nil, false
	}
	key := s.b[s.i+1 : end-1]
	s.i = end
	s.space()
	if s.i >= len(s.b) || s.b[s.i] != ':' {
		return nil, false
	}
	s.i++
	s.skipValue()
	return key, true
}

func (s *keyScanner) space() {
	for s.i < len(s.b) && isSpace(s.b[s.i]) {
		s.i++
	}
}

// skipValue moves past one value: to the ',' or '}' after it.
func (s *keyScanner) skipValue() {
	depth := 0
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '"':
			s.i = stringEnd(s.b, s.i)
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return
			}
			depth--
		case ',':
			if depth == 0 {
				return
			}
		}
		s.i++
	}
}

// stringEnd returns the index after the closing quote of the string that
// starts at b[i], or len(b)+1 when it is not closed.
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b) + 1
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// Image references of a record are kept, when it has any, as the extra
// member "images" of its event (CONTRACT.md section 2: unknown fields go
// to attrs): [{"id": ImageID, "path": StoragePath, "type": Type}], the
// pictures themselves (Data) left out. Bounds keep the event well within
// the 64 KiB a message may have.
const (
	maxImages         = 8
	maxImageIDBytes   = 128
	maxImagePathBytes = 1024
	maxImageAttrBytes = 8 << 10
)

// images are the references in a SubImageList
// ({"SubImageInfoObject":[...]}). A list of another shape is left out
// rather than failing the record: it is not a field the contract maps.
type images []image

type image struct {
	ImageID     text
	StoragePath text
	Type        text
}

func (im *images) UnmarshalJSON(b []byte) error {
	*im = nil
	var l struct{ SubImageInfoObject records }
	if json.Unmarshal(b, &l) != nil {
		return nil
	}
	for _, raw := range l.SubImageInfoObject {
		if len(*im) == maxImages {
			break
		}
		var x image
		if json.Unmarshal(raw, &x) != nil || x.ImageID == "" && x.StoragePath == "" ||
			len(x.ImageID) > maxImageIDBytes || len(x.StoragePath) > maxImagePathBytes || len(x.Type) > 16 {
			continue
		}
		*im = append(*im, x)
	}
	return nil
}

// appendAttrs appends the "images" member, as an attrs object, to dst
// (an event's empty Attrs).
func (im images) appendAttrs(dst []byte) []byte {
	if len(im) == 0 {
		return dst
	}
	dst = append(dst, `{"images":[`...)
	for i, x := range im {
		mark := len(dst)
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '{')
		sep := false
		for _, f := range [...]struct {
			name string
			v    text
		}{{"id", x.ImageID}, {"path", x.StoragePath}, {"type", x.Type}} {
			if f.v == "" {
				continue
			}
			if sep {
				dst = append(dst, ',')
			}
			dst = append(dst, '"')
			dst = append(dst, f.name...)
			dst = append(dst, '"', ':')
			dst = event.AppendJSONString(dst, string(f.v))
			sep = true
		}
		dst = append(dst, '}')
		if len(dst) > maxImageAttrBytes {
			dst = dst[:mark]
			break
		}
	}
	return append(dst, ']', '}')
}
