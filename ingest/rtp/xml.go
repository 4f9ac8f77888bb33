package rtp

import (
	"bytes"
	"errors"
	"unicode/utf8"
)

// A small XML tokenizer for ONVIF metadata documents. encoding/xml
// allocates for every token and name; this one hands out sub-slices of the
// document and allocates nothing. It reads what the metadata profile uses
// (elements, attributes, character data, CDATA, the five predefined
// entities and character references, comments, processing instructions)
// and rejects DTDs, so that no entity can expand. Namespace prefixes are
// dropped: elements are matched by local name, as ONVIF clients do.

type tokKind uint8

const (
	tokEOF tokKind = iota
	tokStart
	tokEnd
	tokText
)

// maxDepth bounds element nesting; ONVIF metadata is about 8 deep.
const maxDepth = 32

var (
	errXMLSyntax = errors.New("malformed XML")
	errXMLDepth  = errors.New("XML nested too deep")
	errXMLDTD    = errors.New("DTD not allowed")
)

type scanner struct {
	b []byte
	i int

	kind      tokKind
	name      []byte // local name of a start or end tag
	attrs     []byte // raw attribute text of a start tag
	text      []byte // raw character data (entities not decoded)
	cdata     bool   // text is CDATA content, to be taken verbatim
	selfClose bool   // the start tag was <x/>; an end token follows

	depth  int
	stack  [maxDepth][]byte // qualified names of open elements
	closed bool             // the root element has ended
}

func (s *scanner) reset(b []byte) {
	*s = scanner{b: b}
}

// next reads the next token into s.
func (s *scanner) next() error {
	if s.selfClose {
		s.selfClose = false
		s.kind = tokEnd
		s.depth--
		if s.depth == 0 {
			s.closed = true
		}
		return nil
	}
	for {
		if s.i >= len(s.b) {
			if s.depth > 0 {
				return errXMLSyntax
			}
			s.kind = tokEOF
			return nil
		}
		if s.b[s.i] != '<' {
			j := bytes.IndexByte(s.b[s.i:], '<')
			if j < 0 {
				j = len(s.b) - s.i
			}
			s.text, s.cdata = s.b[s.i:s.i+j], false
			s.i += j
			if s.depth == 0 {
				if len(bytes.TrimSpace(s.text)) != 0 {
					return errXMLSyntax // text outside the root
				}
				continue
			}
			s.kind = tokText
			return nil
		}
		rest := s.b[s.i:]
		switch {
		case bytes.HasPrefix(rest, []byte("<?")):
			j := bytes.Index(rest, []byte("?>"))
			if j < 0 {
				return errXMLSyntax
			}
			s.i += j + 2
			continue
		case bytes.HasPrefix(rest, []byte("<!--")):
			j := bytes.Index(rest[4:], []byte("-->"))
			if j < 0 {
				return errXMLSyntax
			}
			s.i += 4 + j + 3
			continue
		case bytes.HasPrefix(rest, []byte("<![CDATA[")):
			j := bytes.Index(rest[9:], []byte("]]>"))
			if j < 0 || s.depth == 0 {
				return errXMLSyntax
			}
			s.text, s.cdata = rest[9:9+j], true
			s.i += 9 + j + 3
			s.kind = tokText
			return nil
		case bytes.HasPrefix(rest, []byte("<!")):
			return errXMLDTD
		case len(rest) > 1 && rest[1] == '/':
			return s.endTag(rest)
		default:
			return s.startTag(rest)
		}
	}
}

func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '-' || c == '.' || c == ':' || c >= 0x80
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// readName returns the length of the name at the start of b.
func readName(b []byte) int {
	n := 0
	for n < len(b) && isNameByte(b[n]) {
		n++
	}
	if n > 0 && (b[0] >= '0' && b[0] <= '9' || b[0] == '-' || b[0] == '.') {
		return 0
	}
	return n
}

func localName(q []byte) []byte {
	if j := bytes.LastIndexByte(q, ':'); j >= 0 {
		return q[j+1:]
	}
	return q
}

func (s *scanner) startTag(rest []byte) error {
	if s.closed {
		return errXMLSyntax // a second root
	}
	n := readName(rest[1:])
	if n == 0 {
		return errXMLSyntax
	}
	q := rest[1 : 1+n]
	// Attributes: name = "value" or 'value', separated by spaces.
	k := 1 + n
	attrStart := k
	for {
		for k < len(rest) && isSpace(rest[k]) {
			k++
		}
		if k >= len(rest) {
			return errXMLSyntax
		}
		if rest[k] == '>' || rest[k] == '/' {
			break
		}
		if k == attrStart || !isSpace(rest[k-1]) {
			return errXMLSyntax
		}
		an := readName(rest[k:])
		if an == 0 {
			return errXMLSyntax
		}
		k += an
		for k < len(rest) && isSpace(rest[k]) {
			k++
		}
		if k >= len(rest) || rest[k] != '=' {
			return errXMLSyntax
		}
		k++
		for k < len(rest) && isSpace(rest[k]) {
			k++
		}
		if k >= len(rest) || (rest[k] != '"' && rest[k] != '\'') {
			return errXMLSyntax
		}
		quote := rest[k]
		j := bytes.IndexByte(rest[k+1:], quote)
		if j < 0 || bytes.IndexByte(rest[k+1:k+1+j], '<') >= 0 {
			return errXMLSyntax
		}
		k += 1 + j + 1
	}
	s.attrs = rest[attrStart:k]
	if rest[k] == '/' {
		if k+1 >= len(rest) || rest[k+1] != '>' {
			return errXMLSyntax
		}
		s.selfClose = true
		k++
	}
	s.i += k + 1
	if s.depth >= maxDepth {
		return errXMLDepth
	}
	s.stack[s.depth] = q
	s.depth++
	s.kind = tokStart
	s.name = localName(q)
	return nil
}

func (s *scanner) endTag(rest []byte) error {
	n := readName(rest[2:])
	if n == 0 || s.depth == 0 {
		return errXMLSyntax
	}
	q := rest[2 : 2+n]
	k := 2 + n
	for k < len(rest) && isSpace(rest[k]) {
		k++
	}
	if k >= len(rest) || rest[k] != '>' {
		return errXMLSyntax
	}
	if !bytes.Equal(q, s.stack[s.depth-1]) {
		return errXMLSyntax
	}
	s.depth--
	if s.depth == 0 {
		s.closed = true
	}
	s.i += k + 1
	s.kind = tokEnd
	s.name = localName(q)
	return nil
}

// attr returns the raw value of the attribute with local name name in a
// start tag's attribute text.
func attr(raw []byte, name string) ([]byte, bool) {
	k := 0
	for k < len(raw) {
		for k < len(raw) && isSpace(raw[k]) {
			k++
		}
		an := readName(raw[k:])
		if an == 0 {
			return nil, false
		}
		aname := localName(raw[k : k+an])
		k += an
		for k < len(raw) && raw[k] != '"' && raw[k] != '\'' {
			k++
		}
		if k >= len(raw) {
			return nil, false
		}
		quote := raw[k]
		j := bytes.IndexByte(raw[k+1:], quote)
		if j < 0 {
			return nil, false
		}
		v := raw[k+1 : k+1+j]
		k += j + 2
		if string(aname) == name {
			return v, true
		}
	}
	return nil, false
}

// unescape appends src to dst with the predefined entities and character
// references decoded.
func unescape(dst, src []byte) ([]byte, error) {
	for {
		j := bytes.IndexByte(src, '&')
		if j < 0 {
			return append(dst, src...), nil
		}
		dst = append(dst, src[:j]...)
		src = src[j:]
		end := bytes.IndexByte(src, ';')
		if end < 0 || end > 12 {
			return dst, errXMLSyntax
		}
		ent := src[1:end]
		src = src[end+1:]
		switch string(ent) {
		case "amp":
			dst = append(dst, '&')
		case "lt":
			dst = append(dst, '<')
		case "gt":
			dst = append(dst, '>')
		case "quot":
			dst = append(dst, '"')
		case "apos":
			dst = append(dst, '\'')
		default:
			if len(ent) < 2 || ent[0] != '#' {
				return dst, errXMLSyntax
			}
			r, ok := charRef(ent[1:])
			if !ok {
				return dst, errXMLSyntax
			}
			dst = utf8.AppendRune(dst, r)
		}
	}
}

func charRef(b []byte) (rune, bool) {
	base := rune(10)
	if len(b) > 0 && (b[0] == 'x' || b[0] == 'X') {
		base, b = 16, b[1:]
	}
	if len(b) == 0 || len(b) > 8 {
		return 0, false
	}
	var r rune
	for _, c := range b {
		var d rune
		switch {
		case c >= '0' && c <= '9':
			d = rune(c - '0')
		case base == 16 && c >= 'a' && c <= 'f':
			d = rune(c-'a') + 10
		case base == 16 && c >= 'A' && c <= 'F':
			d = rune(c-'A') + 10
		default:
			return 0, false
		}
		r = r*base + d
	}
	if r == 0 || r > utf8.MaxRune || !utf8.ValidRune(r) {
		return 0, false
	}
	return r, true
}
