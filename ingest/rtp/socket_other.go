//go:build !(linux && (amd64 || arm64))

package rtp

import (
	"context"
	"net"
)

func listenUDP(ctx context.Context, addr string, readBuffer int) (*net.UDPConn, error) {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, err
	}
	conn := pc.(*net.UDPConn)
	if readBuffer > 0 {
		_ = conn.SetReadBuffer(readBuffer)
	}
	return conn, nil
}

// reusePort reports whether several sockets can share a port here.
const reusePort = false

// batchReader reads one datagram per call where recvmmsg is not available.
type batchReader struct {
	conn *net.UDPConn
	buf  []byte
	n    int
}

func newBatchReader(conn *net.UDPConn, _, size int) (*batchReader, error) {
	return &batchReader{conn: conn, buf: make([]byte, size+1)}, nil
}

func (b *batchReader) read() (int, error) {
	n, err := b.conn.Read(b.buf)
	if err != nil {
		return 0, err
	}
	b.n = n
	return 1, nil
}

// stamp reports no kernel receive time: the caller uses the time the read
// returned.
func (b *batchReader) stamp(int) (int64, bool) { return 0, false }

func (b *batchReader) datagram(int) ([]byte, bool) {
	if b.n == len(b.buf) {
		return b.buf[:b.n], true
	}
	return b.buf[:b.n], false
}

// BatchWriter sends datagrams one per call where sendmmsg is not available.
type BatchWriter struct {
	conn *net.UDPConn
}

// NewBatchWriter returns a writer on conn, which must be connected.
func NewBatchWriter(conn *net.UDPConn, _, _ int) (*BatchWriter, error) {
	return &BatchWriter{conn: conn}, nil
}

// Add sends b.
func (w *BatchWriter) Add(b []byte) error {
	_, err := w.conn.Write(b)
	return err
}

// Flush does nothing: Add has sent every datagram.
func (w *BatchWriter) Flush() error { return nil }
