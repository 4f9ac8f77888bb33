package rtp

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// TestBatchWriterDeliversInOrder sends more datagrams than one batch holds
// and reads every one back, in order and whole.
func TestBatchWriterDeliversInOrder(t *testing.T) {
	ln, err := listenUDP(t.Context(), "127.0.0.1:0", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialUDP("udp", nil, ln.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w, err := NewBatchWriter(c, 8, 64)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		if err := w.Add(bytes.Repeat([]byte{byte(i)}, 1+i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := ln.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 128)
	for i := range n {
		m, err := ln.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if want := bytes.Repeat([]byte{byte(i)}, 1+i); !bytes.Equal(buf[:m], want) {
			t.Fatalf("datagram %d = %v, want %v", i, buf[:m], want)
		}
	}
}
