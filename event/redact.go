package event

// RedactPersonal masks personal data in a payload bound for the DLQ
// (CONTRACT.md section 5). The payload may be any bytes, broken or cut JSON
// included. It returns a copy in which:
//
//   - the string value after every key "buyer_id" or "buyer_name" (matched
//     without regard to case, wherever such a key appears) is replaced by
//     its masked form (MaskIDNumber, MaskName); a value cut off by the end of
//     the payload is masked up to there and closed;
//   - every run of 17 digits followed by a digit, X or x that is not part of
//     a longer run of digits is masked as MaskIDNumber would, so that an ID
//     number anywhere (an unknown field, free text, a number, a cut payload)
//     does not survive; such a run that is a bare JSON number becomes a
//     string, so that valid JSON stays valid.
//
// When nothing needed masking it returns payload itself. It never panics.
// An ID number spelt with \u escapes or full-width digits is not found.
func RedactPersonal(payload []byte) []byte {
	return redactIDRuns(redactKeys(payload))
}

// redactKeys masks the values of buyer_id and buyer_name keys. It returns
// payload itself when nothing changed.
func redactKeys(payload []byte) []byte {
	var out []byte // nil until something changes
	last := 0      // payload[last:] is not yet copied to out
	var scratch []byte
	for i := 0; i < len(payload); i++ {
		if payload[i] != '"' {
			continue
		}
		nameEnd, isID, ok := matchPersonalKey(payload, i+1)
		if !ok {
			continue
		}
		j := skipWSBytes(payload, nameEnd)
		if j >= len(payload) || payload[j] != ':' {
			continue
		}
		j = skipWSBytes(payload, j+1)
		if j >= len(payload) || payload[j] != '"' {
			continue
		}
		end := stringEnd(payload, j+1) // index of the closing quote or len(payload)
		value := string(appendUnescaped(scratch[:0], string(payload[j+1:end])))
		repl := scratch[:0]
		if isID {
			repl = appendString(repl, string(appendMaskedID(nil, value)))
		} else {
			repl = appendString(repl, string(appendMaskedName(nil, value)))
		}
		origEnd := end + 1
		if end >= len(payload) {
			origEnd = len(payload)
		}
		if string(repl) != string(payload[j:origEnd]) {
			out = append(out, payload[last:j]...)
			out = append(out, repl...)
			last = origEnd
		}
		scratch = repl
		i = origEnd - 1
	}
	if out == nil {
		return payload
	}
	return append(out, payload[last:]...)
}

// matchPersonalKey reports whether b[i:] starts with buyer_id" or
// buyer_name" in any case, and returns the index after the quote.
func matchPersonalKey(b []byte, i int) (end int, isID, ok bool) {
	const id, name = `buyer_id"`, `buyer_name"`
	if hasPrefixFold(b[i:], id) {
		return i + len(id), true, true
	}
	if hasPrefixFold(b[i:], name) {
		return i + len(name), false, true
	}
	return 0, false, false
}

// hasPrefixFold reports whether b starts with the lower-case ASCII prefix,
// ignoring ASCII case.
func hasPrefixFold(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := range len(prefix) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

func skipWSBytes(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index of the quote that closes the string whose
// content starts at b[i], or len(b) if it is not closed.
func stringEnd(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case '"':
			return i
		case '\\':
			i += 2
		default:
			i++
		}
	}
	return len(b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// redactIDRuns masks ID-number-shaped digit runs in b. A run that is a
// JSON number outside any string becomes a string ("110105********0021")
// so that valid JSON stays valid. It returns b itself when nothing
// changed, and never writes to b.
func redactIDRuns(b []byte) []byte {
	var out []byte // nil until something changes
	last := 0      // b[last:] is not yet copied to out
	inString := false
	for i := 0; i < len(b); {
		c := b[i]
		if !isDigit(c) {
			switch {
			case inString && c == '\\' && i+1 < len(b) && (b[i+1] == '"' || b[i+1] == '\\'):
				i++ // skip the escaped quote or backslash
			case c == '"':
				inString = !inString
			}
			i++
			continue
		}
		j := i
		for j < len(b) && isDigit(b[j]) {
			j++
		}
		n := j - i
		if n == 17 && j < len(b) && (b[j] == 'X' || b[j] == 'x') {
			n, j = 18, j+1
		}
		if n != 18 {
			i = j
			continue
		}
		start, end := i, j
		number := false
		if !inString && isDigit(b[j-1]) && isNumberStart(b, i) {
			e := numberEnd(b, end)
			if e == len(b) || isNumberEnd(b[e]) {
				number, end = true, e
				if start > 0 && b[start-1] == '-' {
					start--
				}
			}
		}
		out = append(out, b[last:start]...)
		if number {
			out = append(out, '"')
			out = appendMaskedRuns(out, b[start:end])
			out = append(out, '"')
		} else {
			out = appendMaskedRuns(out, b[start:end])
		}
		last = end
		i = end
	}
	if out == nil {
		return b
	}
	return append(out, b[last:]...)
}

// isNumberStart reports whether the digit at b[i] starts a JSON number
// value: it follows (after an optional minus and white space) a ':', ',',
// '[' or the start of the payload.
func isNumberStart(b []byte, i int) bool {
	if i > 0 && b[i-1] == '-' {
		i--
	}
	for i > 0 {
		switch b[i-1] {
		case ' ', '\t', '\n', '\r':
			i--
		case ':', ',', '[':
			return true
		default:
			return false
		}
	}
	return true
}

func isNumberEnd(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}

// numberEnd returns the end of the fraction and exponent, if any, of the
// JSON number whose integer digits end at b[i].
func numberEnd(b []byte, i int) int {
	digits := func(i int) int {
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		return i
	}
	if i+1 < len(b) && b[i] == '.' && isDigit(b[i+1]) {
		i = digits(i + 1)
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		j := i + 1
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		if j < len(b) && isDigit(b[j]) {
			i = digits(j)
		}
	}
	return i
}

// appendMaskedRuns appends tok to dst with every ID-number-shaped digit run
// masked.
func appendMaskedRuns(dst, tok []byte) []byte {
	for i := 0; i < len(tok); {
		if !isDigit(tok[i]) {
			dst = append(dst, tok[i])
			i++
			continue
		}
		j := i
		for j < len(tok) && isDigit(tok[j]) {
			j++
		}
		n := j - i
		if n == 17 && j < len(tok) && (tok[j] == 'X' || tok[j] == 'x') {
			n, j = 18, j+1
		}
		if n == 18 {
			dst = append(dst, tok[i:i+6]...)
			dst = append(dst, "********"...)
			dst = append(dst, tok[i+14:j]...)
		} else {
			dst = append(dst, tok[i:j]...)
		}
		i = j
	}
	return dst
}
