package store_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"citywatch/internal/chtest"
	"citywatch/store"
)

// proxy forwards TCP connections to a ClickHouse server until it is told to
// stall (keep connections open, forward nothing) or is closed (refuse and
// cut every connection).
type proxy struct {
	ln       net.Listener
	upstream string
	stalled  atomic.Bool
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func newProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, upstream: upstream}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(up, c) })
		p.wg.Go(func() { p.pipe(c, up) })
	}
}

// pipe copies src to dst, dropping what it reads while the proxy stalls.
func (p *proxy) pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.stalled.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// close refuses new connections, cuts the open ones and waits for the
// proxy's goroutines.
func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// TestInsertUnreachable opens a store through a proxy, makes the server
// unreachable in two ways and checks that Insert fails within its context's
// deadline instead of hanging.
func TestInsertUnreachable(t *testing.T) {
	tests := []struct {
		name string
		cut  func(*proxy)
	}{
		{"connection refused", (*proxy).close},
		{"server stalls", func(p *proxy) { p.stalled.Store(true) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := chtest.Config(t)
			p := newProxy(t, cfg.Addr[0])
			cfg.Addr = []string{p.addr()}
			cfg.DialTimeout = time.Second
			ctx := t.Context()
			db, err := store.Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			b := store.NewBatch()
			for _, e := range sampleEvents(100, base) {
				b.AddEvent(&e, base)
			}
			if err := db.Insert(ctx, b); err != nil {
				t.Fatalf("Insert while reachable: %v", err)
			}

			tt.cut(p)
			const timeout = 500 * time.Millisecond
			ictx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			start := time.Now()
			err = db.Insert(ictx, b)
			took := time.Since(start)
			if err == nil {
				t.Fatal("Insert succeeded with the server unreachable")
			}
			if !strings.Contains(err.Error(), "cannot insert into events") {
				t.Errorf("Insert = %v, want it to name the table", err)
			}
			if took > timeout+2*time.Second {
				t.Errorf("Insert returned after %v, want about %v", took, timeout)
			}
			t.Logf("Insert failed after %v: %v", took.Round(time.Millisecond), err)

			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			if err := db.Ping(pctx); err == nil {
				t.Error("Ping succeeded with the server unreachable")
			}
		})
	}
}

// TestOpenUnreachable checks that Open fails, and does not hang, when
// nothing listens.
func TestOpenUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	db, err := store.Open(ctx, store.Config{Addr: []string{addr}, DialTimeout: time.Second})
	if err == nil {
		db.Close()
		t.Fatal("Open succeeded with nothing listening")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Logf("Open failed by its deadline: %v", err)
	}
}
