package event

import "unicode/utf8"

// idWeights are the GB 11643 weights 2^(17−i) mod 11 of the first 17 digits.
var idWeights = [17]int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}

// idCheckChars maps the weighted sum mod 11 to the check character
// (ISO 7064 MOD 11-2).
const idCheckChars = "10X98765432"

// IDCheckDigit returns the GB 11643 check character (ISO 7064 MOD 11-2)
// for the first 17 digits of an ID number, or 0 when first17 is not 17
// digits. Simulators use it to make valid numbers.
func IDCheckDigit(first17 string) byte {
	if len(first17) != 17 {
		return 0
	}
	sum := 0
	for i := range 17 {
		c := first17[i] - '0'
		if c > 9 {
			return 0
		}
		sum += int(c) * idWeights[i]
	}
	return idCheckChars[sum%11]
}

// idCheck classifies s as an ID number: format reports 18 characters, 17
// digits then a digit or X/x; check reports that the check character is
// also right.
func idCheck(s string) (format, check bool) {
	if len(s) != 18 {
		return false, false
	}
	sum := 0
	for i := range 17 {
		c := s[i] - '0'
		if c > 9 {
			return false, false
		}
		sum += int(c) * idWeights[i]
	}
	last := s[17]
	if last == 'x' {
		last = 'X'
	}
	if last != 'X' && (last < '0' || last > '9') {
		return false, false
	}
	return true, idCheckChars[sum%11] == last
}

// ValidIDNumber reports whether s is an 18-character resident identity
// number (GB 11643) with a right check character; a trailing lower-case x
// is read as X.
func ValidIDNumber(s string) bool {
	_, ok := idCheck(s)
	return ok
}

// NormalizeIDNumber returns s with a trailing x upper-cased, and whether it
// is a valid ID number (see ValidIDNumber). An invalid s is returned as is.
func NormalizeIDNumber(s string) (string, bool) {
	if !ValidIDNumber(s) {
		return s, false
	}
	if s[17] == 'x' {
		return s[:17] + "X", true
	}
	return s, true
}

// MaskIDNumber returns the masked form of an ID number that may be shown
// where the number itself must not: the first 6 characters (the region),
// eight '*', and the last 4 ("420602********123X"). For input that is not
// 18 characters long it keeps at most the last 4 characters, and fewer for
// short input, so that a mistyped number is not shown either.
func MaskIDNumber(id string) string {
	return string(appendMaskedID(nil, id))
}

// appendMaskedID appends MaskIDNumber(id) to dst.
func appendMaskedID(dst []byte, id string) []byte {
	n := utf8.RuneCountInString(id)
	keepHead, keepTail := 0, 4
	switch {
	case n == 18:
		keepHead = 6
	case n < 8:
		keepTail = n / 4 // 0 for up to 3 characters, 1 for 4–7
	}
	i := 0
	for j, r := range id {
		switch {
		case i < keepHead || i >= n-keepTail:
			if r == utf8.RuneError {
				dst = utf8.AppendRune(dst, r)
			} else {
				dst = append(dst, id[j:j+utf8.RuneLen(r)]...)
			}
		default:
			dst = append(dst, '*')
		}
		i++
	}
	return dst
}

// MaskName returns the masked form of a person's name: its first character
// then one '*' for each other character, at least one ("张三" → "张*",
// "欧阳娜娜" → "欧***", "张" → "张*"). An empty name masks to "*".
func MaskName(name string) string {
	return string(appendMaskedName(nil, name))
}

// appendMaskedName appends MaskName(name) to dst.
func appendMaskedName(dst []byte, name string) []byte {
	r, size := utf8.DecodeRuneInString(name)
	if size > 0 {
		dst = utf8.AppendRune(dst, r) // invalid UTF-8 becomes U+FFFD
	}
	stars := utf8.RuneCountInString(name[size:])
	if stars == 0 {
		stars = 1
	}
	for range stars {
		dst = append(dst, '*')
	}
	return dst
}
