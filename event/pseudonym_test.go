package event

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNewPseudonymizerWeakKey(t *testing.T) {
	for _, key := range [][]byte{nil, {}, []byte("fifteen bytes!!")} {
		if _, err := NewPseudonymizer(key); !errors.Is(err, ErrWeakKey) {
			t.Errorf("NewPseudonymizer(%d bytes) error %v, want ErrWeakKey", len(key), err)
		}
	}
	if _, err := NewPseudonymizer([]byte("sixteen bytes!!!")); err != nil {
		t.Errorf("16-byte key: %v", err)
	}
}

func TestPseudonym(t *testing.T) {
	key := []byte("0123456789abcdef-secret")
	p, err := NewPseudonymizer(key)
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("11010519491231002X"))
	want := hex.EncodeToString(mac.Sum(nil)[:16])

	for _, id := range []string{"11010519491231002X", "11010519491231002x", "11010519491231002X"} {
		if got := p.Pseudonym(id); got != want {
			t.Errorf("Pseudonym(%s) = %s, want %s", id, got, want)
		}
	}
	if got := p.Pseudonym(validID("42060219900101123")); got == want || len(got) != 32 {
		t.Errorf("another number: %s", got)
	}
	other, _ := NewPseudonymizer([]byte("another key of 16+ bytes"))
	if other.Pseudonym("11010519491231002X") == want {
		t.Error("same pseudonym under another key")
	}
	// The caller's key may be changed afterwards.
	k := append([]byte(nil), key...)
	p2, _ := NewPseudonymizer(k)
	k[0] ^= 0xff
	if got := p2.Pseudonym("11010519491231002X"); got != want {
		t.Error("Pseudonymizer depends on the caller's key slice")
	}
}

func TestApply(t *testing.T) {
	p := newTestPseudonymizer(t)
	e := Event{Type: TypeFuelPurchase, BuyerID: "11010519491231002x", BuyerName: "欧阳娜娜", StationID: "s"}
	p.Apply(&e)
	want := Event{
		Type: TypeFuelPurchase, StationID: "s",
		BuyerPseudonym:  p.Pseudonym("11010519491231002X"),
		BuyerIDMasked:   "110105********002X",
		BuyerNameMasked: "欧***",
	}
	if diff := cmp.Diff(&want, &e, eventOpts); diff != "" {
		t.Errorf("Apply (-want +got):\n%s", diff)
	}
	// Twice is harmless.
	p.Apply(&e)
	if diff := cmp.Diff(&want, &e, eventOpts); diff != "" {
		t.Errorf("second Apply (-want +got):\n%s", diff)
	}
	// Other types are left alone.
	o := Event{Type: TypeCameraDetection, BuyerID: "x"}
	p.Apply(&o)
	if o.BuyerID != "x" || o.BuyerPseudonym != "" {
		t.Errorf("Apply changed a camera.detection: %+v", o)
	}
	// Results stay valid after the next Apply.
	first := e.BuyerPseudonym
	e2 := Event{Type: TypeFuelPurchase, BuyerID: validID("42060219900101123"), BuyerName: "张三"}
	p.Apply(&e2)
	if e.BuyerPseudonym != first || e2.BuyerNameMasked != "张*" {
		t.Errorf("strings shared between Apply calls: %q %q", e.BuyerPseudonym, e2.BuyerNameMasked)
	}
}

func TestApplyAllocs(t *testing.T) {
	p := newTestPseudonymizer(t)
	e := Event{Type: TypeFuelPurchase}
	n := testing.AllocsPerRun(100, func() {
		e.BuyerID, e.BuyerName = "11010519491231002X", "张三"
		p.Apply(&e)
	})
	if n > 1 {
		t.Errorf("Apply: %v allocations, want at most 1", n)
	}
}
