package event

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
)

// ErrWeakKey is returned by NewPseudonymizer for a key shorter than
// MinKeyLen bytes.
var ErrWeakKey = errors.New("pseudonym key too short")

// MinKeyLen is the shortest pseudonym key NewPseudonymizer accepts, in bytes.
const MinKeyLen = 16

// pseudonymBytes is how many bytes of the HMAC a pseudonym keeps.
const pseudonymBytes = 16

// Pseudonymizer replaces personal fields with a keyed pseudonym
// (HMAC-SHA-256); not safe for concurrent use. The same key and ID number
// always give the same pseudonym, so rules and watchlists compare buyers by
// pseudonym; without the key a pseudonym cannot be tied to a number.
type Pseudonymizer struct {
	mac hash.Hash
	in  []byte // the normalised ID number being hashed
	sum []byte
	buf []byte
}

// NewPseudonymizer returns a Pseudonymizer keyed with key, or ErrWeakKey if
// the key is shorter than MinKeyLen bytes. It keeps its own copy of key.
func NewPseudonymizer(key []byte) (*Pseudonymizer, error) {
	if len(key) < MinKeyLen {
		return nil, ErrWeakKey
	}
	k := append([]byte(nil), key...)
	return &Pseudonymizer{
		mac: hmac.New(sha256.New, k),
		sum: make([]byte, 0, sha256.Size),
		in:  make([]byte, 0, 32),
		buf: make([]byte, 0, 128),
	}, nil
}

// Pseudonym returns the pseudonym of an ID number: the first 16 bytes of
// HMAC-SHA-256 over the normalised number (a trailing x read as X), in
// lower-case hex (32 characters).
func (p *Pseudonymizer) Pseudonym(idNumber string) string {
	return string(p.appendPseudonym(p.buf[:0], idNumber))
}

func (p *Pseudonymizer) appendPseudonym(dst []byte, idNumber string) []byte {
	p.in = append(p.in[:0], idNumber...)
	if n := len(p.in); n == 18 && p.in[n-1] == 'x' {
		p.in[n-1] = 'X'
	}
	p.mac.Reset()
	p.mac.Write(p.in)
	p.sum = p.mac.Sum(p.sum[:0])
	var h [2 * pseudonymBytes]byte
	hex.Encode(h[:], p.sum[:pseudonymBytes])
	return append(dst, h[:]...)
}

// Apply pseudonymises a fuel.purchase: it sets BuyerPseudonym,
// BuyerIDMasked and BuyerNameMasked from BuyerID and BuyerName, then clears
// those two. It does nothing for other types, or when both are already
// empty (Apply was called before), so calling it twice is harmless.
func (p *Pseudonymizer) Apply(e *Event) {
	if e.Type != TypeFuelPurchase || e.BuyerID == "" && e.BuyerName == "" {
		return
	}
	id, _ := NormalizeIDNumber(e.BuyerID)
	// One allocation holds all three strings.
	b := p.appendPseudonym(p.buf[:0], id)
	n1 := len(b)
	b = appendMaskedID(b, id)
	n2 := len(b)
	b = appendMaskedName(b, e.BuyerName)
	p.buf = b[:0]
	s := string(b)
	e.BuyerPseudonym = s[:n1]
	e.BuyerIDMasked = s[n1:n2]
	e.BuyerNameMasked = s[n2:]
	e.BuyerID = ""
	e.BuyerName = ""
}
