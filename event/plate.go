package event

import "unicode/utf8"

// maxPlateRunes bounds a plate as read; longer values are out of range.
const maxPlateRunes = 32

// NormalizePlate returns the normal form of a plate as read and whether it
// is a valid plate (CONTRACT.md section 2, plates). The normal form is upper
// case and half-width, without spaces, dots, dashes or middle dots
// ("鄂f·１２３４５" → "鄂F12345"). A valid plate is a province character, a
// letter A–Z, then 5 serial characters (ordinary, 7 in all) or 6 (new
// energy, 8 in all), digits or letters other than I and O; on an ordinary
// plate a suffix 学, 警, 挂, 领, 港 or 澳 may take the place of the last
// serial character. Length counts characters, not bytes. Plates of
// embassies and consulates (使, 领 prefixes) are not recognised.
//
// When the plate is not valid, NormalizePlate returns it unchanged with
// false; an empty plate is not valid. It allocates only when a valid plate
// was not already in normal form.
func NormalizePlate(plate string) (string, bool) {
	var rs [8]rune
	n := 0
	changed := false
	for _, r := range plate {
		f := foldPlateRune(r)
		if f != r {
			changed = true
		}
		if f < 0 {
			continue
		}
		if n == len(rs) {
			return plate, false
		}
		rs[n] = f
		n++
	}
	if !validPlateRunes(rs[:n]) {
		return plate, false
	}
	if !changed {
		return plate, true
	}
	var b [len(rs) * utf8.UTFMax]byte
	k := 0
	for _, r := range rs[:n] {
		k += utf8.EncodeRune(b[k:], r)
	}
	return string(b[:k]), true
}

// foldPlateRune maps r to its normal form: upper case, half-width, or −1
// for a separator that the normal form drops.
func foldPlateRune(r rune) rune {
	if 0xFF01 <= r && r <= 0xFF5E { // full-width ASCII
		r -= 0xFEE0
	}
	switch {
	case 'a' <= r && r <= 'z':
		return r - 'a' + 'A'
	case r < 0x80:
		switch r {
		case ' ', '\t', '.', '-':
			return -1
		}
		return r
	}
	switch r {
	case 0x00A0, // no-break space
		0x3000,                                         // ideographic space
		0x00B7, 0x2022, 0x2027, 0x2219, 0x22C5, 0x30FB, // middle dots: · • ‧ ∙ ⋅ ・
		0xFF65,         // halfwidth katakana middle dot ･
		0x3002, 0xFF61, // ideographic full stops 。｡
		0x2010, 0x2011, 0x2012, 0x2013, 0x2014, 0x2015, // hyphens and dashes
		0x2212, 0xFE63: // minus sign, small hyphen-minus
		return -1
	}
	return r
}

func validPlateRunes(rs []rune) bool {
	n := len(rs)
	if n != 7 && n != 8 {
		return false
	}
	if !isProvince(rs[0]) || rs[1] < 'A' || rs[1] > 'Z' {
		return false
	}
	serial := rs[2:]
	if n == 7 && isPlateSuffix(rs[6]) {
		serial = rs[2:6]
	}
	for _, r := range serial {
		switch {
		case '0' <= r && r <= '9':
		case 'A' <= r && r <= 'Z' && r != 'I' && r != 'O':
		default:
			return false
		}
	}
	return true
}

// isProvince reports whether r is one of the 31 mainland province-level
// abbreviations that start a plate.
func isProvince(r rune) bool {
	switch r {
	case '京', '津', '沪', '渝', '冀', '豫', '云', '辽', '黑', '湘', '皖',
		'鲁', '新', '苏', '浙', '赣', '鄂', '桂', '甘', '晋', '蒙', '陕',
		'吉', '闽', '贵', '粤', '青', '藏', '川', '宁', '琼':
		return true
	}
	return false
}

func isPlateSuffix(r rune) bool {
	switch r {
	case '学', '警', '挂', '领', '港', '澳':
		return true
	}
	return false
}
