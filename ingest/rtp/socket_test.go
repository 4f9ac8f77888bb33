package rtp

import (
	"bytes"
	"context"
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

// TestReusePortSpreads sends from many source ports to a receiver with two
// SO_REUSEPORT sockets: the kernel spreads the senders by their address,
// so both sockets receive. (32 senders all hashed to one socket would
// happen once in 2³¹ runs.)
func TestReusePortSpreads(t *testing.T) {
	if !reusePort {
		t.Skip("no SO_REUSEPORT here: one socket")
	}
	r, _ := newTestReceiver(t, Config{Addr: "127.0.0.1:0", Sockets: 2})
	if err := r.Listen(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	const senders, each = 32, 5
	for range senders {
		c, err := net.Dial("udp", r.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		for range each {
			if _, err := c.Write([]byte("not rtp")); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
	}
	// Loopback does not drop these few; wait for all of them (bounded by
	// the test's deadline, not a timing assertion).
	counts := func() []uint64 {
		r.mu.Lock()
		defer r.mu.Unlock()
		var out []uint64
		for _, w := range r.readers {
			out = append(out, w.c[cPackets].Load())
		}
		return out
	}
	for {
		var sum uint64
		got := counts()
		for _, n := range got {
			sum += n
		}
		if len(got) == 2 && sum == senders*each {
			break
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("per socket %v, want %d in all", got, senders*each)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := counts(); got[0] == 0 || got[1] == 0 {
		t.Errorf("per socket %v: one socket received nothing", got)
	}
}

// TestBatchReaderStamps: datagrams read in one batch each carry the
// kernel's receive time (where the platform gives it), between the send
// and the read.
func TestBatchReaderStamps(t *testing.T) {
	ln, err := listenUDP(t.Context(), "127.0.0.1:0", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	br, err := newBatchReader(ln, 8, 64)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ln.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := ln.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		before := time.Now()
		for i := range 4 {
			if _, err := c.Write([]byte{byte(round), byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
		for got := 0; got < 4; {
			n, err := br.read()
			if err != nil {
				t.Fatal(err)
			}
			after := time.Now()
			for i := range n {
				b, _ := br.datagram(i)
				if !bytes.Equal(b, []byte{byte(round), byte(got)}) {
					t.Fatalf("round %d datagram %d = %v", round, got, b)
				}
				got++
				ns, ok := br.stamp(i)
				if !ok {
					if reusePort { // the Linux reader
						t.Fatalf("round %d datagram %d: no receive time", round, i)
					}
					continue
				}
				if at := time.Unix(0, ns); at.Before(before.Truncate(time.Microsecond)) || at.After(after) {
					t.Errorf("received at %v, not between %v and %v", at, before, after)
				}
			}
		}
	}
}
