package event

import (
	"unicode/utf8"
)

// This file is a small JSON scanner over a string: it finds the extent of
// one value and checks it against RFC 8259 (including UTF-8 validity and
// paired surrogate escapes) without building anything, so that the decoder
// can take substrings of one copy of the message.

// valKind is the JSON type of a scanned value.
type valKind uint8

const (
	kindNone valKind = iota
	kindString
	kindNumber
	kindTrue
	kindFalse
	kindNull
	kindObject
	kindArray
)

func (k valKind) String() string {
	switch k {
	case kindString:
		return "string"
	case kindNumber:
		return "number"
	case kindTrue, kindFalse:
		return "boolean"
	case kindNull:
		return "null"
	case kindObject:
		return "object"
	case kindArray:
		return "array"
	}
	return "nothing"
}

// maxDepth is how deeply an unknown value (or a member of attrs) may nest
// objects and arrays.
const maxDepth = 32

func skipWS(s string, i int) int {
	for i < len(s) {
		switch s[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func hexVal(c byte) rune {
	switch {
	case c <= '9':
		return rune(c - '0')
	case c >= 'a':
		return rune(c-'a') + 10
	}
	return rune(c-'A') + 10
}

// hex4 reads the 4 hex digits at s[i:], which the caller has checked.
func hex4(s string, i int) rune {
	return hexVal(s[i])<<12 | hexVal(s[i+1])<<8 | hexVal(s[i+2])<<4 | hexVal(s[i+3])
}

// plainByte marks the bytes that stand for themselves in a JSON string:
// printable ASCII other than '"' and '\\'.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString scans the string starting with the quote at s[i]. It returns
// the index just after the closing quote and whether the string has
// escapes.
func scanString(s string, i int) (end int, esc bool, err error) {
	i++ // opening quote
	for {
		for i < len(s) && plainByte[s[i]] {
			i++
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		switch {
		case c == '"':
			return i + 1, esc, nil
		case c == '\\':
			esc = true
			if i+1 >= len(s) {
				return 0, false, malformedAt(i, "unterminated string")
			}
			switch s[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				_, n, ok := scanUnicodeEscape(s, i)
				if !ok {
					return 0, false, malformedAt(i, "invalid \\u escape")
				}
				i += n
			default:
				return 0, false, malformedAt(i, "invalid escape")
			}
		case c < 0x20:
			return 0, false, malformedAt(i, "control character in string")
		case c < utf8.RuneSelf:
			i++
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				return 0, false, malformedAt(i, "invalid UTF-8")
			}
			i += n
		}
	}
	return 0, false, malformedAt(len(s), "unterminated string")
}

// scanUnicodeEscape reads the \uXXXX escape at s[i:] (and the low half of a
// surrogate pair after it). It returns the rune and the length of the
// escape text; ok is false for bad hex or an unpaired surrogate.
func scanUnicodeEscape(s string, i int) (r rune, n int, ok bool) {
	if i+6 > len(s) || !isHex(s[i+2]) || !isHex(s[i+3]) || !isHex(s[i+4]) || !isHex(s[i+5]) {
		return 0, 0, false
	}
	r = hex4(s, i+2)
	switch {
	case r < 0xD800 || r > 0xDFFF:
		return r, 6, true
	case r >= 0xDC00:
		return 0, 0, false // low half first
	}
	if i+12 > len(s) || s[i+6] != '\\' || s[i+7] != 'u' ||
		!isHex(s[i+8]) || !isHex(s[i+9]) || !isHex(s[i+10]) || !isHex(s[i+11]) {
		return 0, 0, false
	}
	lo := hex4(s, i+8)
	if lo < 0xDC00 || lo > 0xDFFF {
		return 0, 0, false
	}
	return 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00), 12, true
}

// appendUnescaped appends the content of a scanned string (without quotes)
// to dst with its escapes resolved.
func appendUnescaped(dst []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			j := i + 1
			for j < len(s) && s[j] != '\\' {
				j++
			}
			dst = append(dst, s[i:j]...)
			i = j
			continue
		}
		if i+1 >= len(s) {
			return dst // cannot happen after scanString
		}
		switch s[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, n, ok := scanUnicodeEscape(s, i)
			if !ok {
				r, n = utf8.RuneError, 2
			}
			dst = utf8.AppendRune(dst, r)
			i += n
			continue
		default: // '"', '\\', '/'
			dst = append(dst, s[i+1])
		}
		i += 2
	}
	return dst
}

// unescape returns the content of a scanned string with escapes resolved.
func unescape(s string) string {
	return string(appendUnescaped(make([]byte, 0, len(s)), s))
}

// scanNumber scans the number at s[i:] per the JSON grammar.
func scanNumber(s string, i int) (int, error) {
	start := i
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && '1' <= s[i] && s[i] <= '9':
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
		}
	default:
		return 0, malformedAt(start, "invalid number")
	}
	if i < len(s) && s[i] == '.' {
		i++
		d := i
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
		}
		if i == d {
			return 0, malformedAt(start, "invalid number")
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		d := i
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
		}
		if i == d {
			return 0, malformedAt(start, "invalid number")
		}
	}
	return i, nil
}

// scanValue scans the value at s[i:] (no leading white space) and returns
// its kind, the index just after it and, for strings, whether it has
// escapes. depth is how many levels of objects and arrays it may open.
func scanValue(s string, i, depth int) (kind valKind, end int, esc bool, err error) {
	if i >= len(s) {
		return kindNone, 0, false, malformedAt(i, "unexpected end of input")
	}
	switch c := s[i]; c {
	case '"':
		end, esc, err = scanString(s, i)
		return kindString, end, esc, err
	case '{':
		end, err = scanComposite(s, i, depth, '}')
		return kindObject, end, false, err
	case '[':
		end, err = scanComposite(s, i, depth, ']')
		return kindArray, end, false, err
	case 't':
		return scanLiteral(s, i, "true", kindTrue)
	case 'f':
		return scanLiteral(s, i, "false", kindFalse)
	case 'n':
		return scanLiteral(s, i, "null", kindNull)
	default:
		if c == '-' || '0' <= c && c <= '9' {
			end, err = scanNumber(s, i)
			return kindNumber, end, false, err
		}
	}
	return kindNone, 0, false, malformedAt(i, "invalid character "+quoteChar(s, i))
}

func scanLiteral(s string, i int, lit string, kind valKind) (valKind, int, bool, error) {
	if len(s)-i < len(lit) || s[i:i+len(lit)] != lit {
		return kindNone, 0, false, malformedAt(i, "invalid literal")
	}
	return kind, i + len(lit), false, nil
}

// scanComposite scans the object or array opening at s[i].
func scanComposite(s string, i, depth int, closer byte) (int, error) {
	if depth <= 0 {
		return 0, malformedAt(i, "nested too deeply")
	}
	i = skipWS(s, i+1)
	if i < len(s) && s[i] == closer {
		return i + 1, nil
	}
	for {
		if closer == '}' {
			if i >= len(s) || s[i] != '"' {
				return 0, malformedAt(i, "expected string key")
			}
			end, _, err := scanString(s, i)
			if err != nil {
				return 0, err
			}
			i = skipWS(s, end)
			if i >= len(s) || s[i] != ':' {
				return 0, malformedAt(i, "expected ':'")
			}
			i = skipWS(s, i+1)
		}
		_, end, _, err := scanValue(s, i, depth-1)
		if err != nil {
			return 0, err
		}
		i = skipWS(s, end)
		if i >= len(s) {
			return 0, malformedAt(i, "unexpected end of input")
		}
		if s[i] == closer {
			return i + 1, nil
		}
		if s[i] != ',' {
			return 0, malformedAt(i, "expected ',' or "+string(rune(closer)))
		}
		i = skipWS(s, i+1)
	}
}

// quoteChar describes the character at s[i] for an error message.
func quoteChar(s string, i int) string {
	r, _ := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError {
		return "byte 0x" + string("0123456789abcdef"[s[i]>>4]) + string("0123456789abcdef"[s[i]&15])
	}
	return quoteValue(string(r))
}
