//go:build linux && (amd64 || arm64)

package rtp

import (
	"context"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// listenUDP opens a UDP socket on addr with SO_REUSEPORT, so that several
// sockets share the port and the kernel spreads senders over them.
func listenUDP(ctx context.Context, addr string, readBuffer int) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			if readBuffer > 0 {
				// Beyond net.core.rmem_max where the process may (CAP_NET_ADMIN);
				// otherwise SetReadBuffer below gets what the limit allows.
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, readBuffer)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, err
	}
	conn := pc.(*net.UDPConn)
	if readBuffer > 0 {
		var got int
		if rc, err := conn.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { got, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) })
		}
		if got < readBuffer {
			_ = conn.SetReadBuffer(readBuffer) // best effort: capped by net.core.rmem_max
		}
	}
	return conn, nil
}

// reusePort reports whether several sockets can share a port here.
const reusePort = true

// mmsghdr is struct mmsghdr of recvmmsg(2) on 64-bit Linux.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// ctrlSize is the control buffer of one datagram: room for the
// SCM_TIMESTAMPNS message (a timespec) and some to spare, a multiple of 8
// so that every datagram's buffer is aligned.
const ctrlSize = 64

// batchReader reads up to len(bufs) datagrams per system call with
// recvmmsg(2), through the runtime's poller, without allocating. When the
// socket allows SO_TIMESTAMPNS, each datagram comes with the time the
// kernel received it.
type batchReader struct {
	rc    syscall.RawConn
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	bufs  [][]byte
	ctrl  []byte // ctrlSize bytes per datagram
	n     int
	used  int // headers the last call filled, whose control lengths to restore
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

func newBatchReader(conn *net.UDPConn, n, size int) (*batchReader, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	b := &batchReader{rc: rc, hdrs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n), bufs: make([][]byte, n)}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err == nil && serr == nil {
		b.ctrl = make([]byte, n*ctrlSize)
	}
	for i := range n {
		b.bufs[i] = make([]byte, size)
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(size)
		b.hdrs[i].hdr.Iov = &b.iovs[i]
		b.hdrs[i].hdr.SetIovlen(1)
		if b.ctrl != nil {
			b.hdrs[i].hdr.Control = &b.ctrl[i*ctrlSize]
		}
	}
	b.used = n
	b.fn = b.recv
	return b, nil
}

func (b *batchReader) recv(fd uintptr) bool {
	if b.ctrl != nil {
		// The kernel writes back how much control data it stored.
		for i := range b.used {
			b.hdrs[i].hdr.SetControllen(ctrlSize)
		}
		b.used = 0
	}
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			b.n, b.errno = int(n), 0
			b.used = b.n
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait until readable
		default:
			b.n, b.errno = 0, errno
			return true
		}
	}
}

// stamp returns when the kernel received the i-th datagram of the last
// read (Unix ns), if it said.
func (b *batchReader) stamp(i int) (int64, bool) {
	if b.ctrl == nil {
		return 0, false
	}
	h := &b.hdrs[i].hdr
	if h.Flags&unix.MSG_CTRUNC != 0 {
		return 0, false
	}
	c := b.ctrl[i*ctrlSize : i*ctrlSize+int(min(h.Controllen, ctrlSize))]
	for len(c) >= unix.SizeofCmsghdr {
		m := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
		if m.Len < unix.SizeofCmsghdr || int(m.Len) > len(c) {
			return 0, false
		}
		if m.Level == unix.SOL_SOCKET && m.Type == unix.SCM_TIMESTAMPNS && int(m.Len) >= unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{}))) {
			ts := (*unix.Timespec)(unsafe.Pointer(&c[unix.CmsgLen(0)]))
			return ts.Nano(), true
		}
		c = c[min(unix.CmsgSpace(int(m.Len)-unix.CmsgLen(0)), len(c)):]
	}
	return 0, false
}

// read fills the buffers and returns how many datagrams arrived.
func (b *batchReader) read() (int, error) {
	if err := b.rc.Read(b.fn); err != nil {
		return 0, err
	}
	if b.errno != 0 {
		return 0, b.errno
	}
	return b.n, nil
}

// datagram returns the i-th datagram of the last read and whether it was
// cut short because it did not fit the buffer.
func (b *batchReader) datagram(i int) ([]byte, bool) {
	h := &b.hdrs[i]
	return b.bufs[i][:h.n], h.hdr.Flags&unix.MSG_TRUNC != 0
}

// BatchWriter sends datagrams on a connected UDP socket several per system
// call with sendmmsg(2). Add copies a datagram into the writer's own
// buffers; Flush sends what was added. A load generator on loopback pays
// the kernel's delivery of every packet in its own sending thread, so one
// system call per packet would measure the sender, not the receiver.
type BatchWriter struct {
	rc    syscall.RawConn
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	bufs  [][]byte
	n     int
	sent  int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// NewBatchWriter returns a writer of up to n datagrams of at most size
// bytes per system call on conn, which must be connected.
func NewBatchWriter(conn *net.UDPConn, n, size int) (*BatchWriter, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	w := &BatchWriter{rc: rc, hdrs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n), bufs: make([][]byte, n)}
	for i := range n {
		w.bufs[i] = make([]byte, size)
		w.hdrs[i].hdr.Iov = &w.iovs[i]
		w.hdrs[i].hdr.SetIovlen(1)
	}
	w.fn = w.send
	return w, nil
}

// Add queues a copy of b, flushing first when the batch is full.
func (w *BatchWriter) Add(b []byte) error {
	if w.n == len(w.hdrs) {
		if err := w.Flush(); err != nil {
			return err
		}
	}
	m := copy(w.bufs[w.n], b)
	w.iovs[w.n].Base = &w.bufs[w.n][0]
	w.iovs[w.n].SetLen(m)
	w.n++
	return nil
}

// Flush sends every queued datagram.
func (w *BatchWriter) Flush() error {
	for w.sent < w.n {
		if err := w.rc.Write(w.fn); err != nil {
			return err
		}
		if w.errno != 0 {
			err := w.errno
			w.n, w.sent, w.errno = 0, 0, 0
			return err
		}
	}
	w.n, w.sent = 0, 0
	return nil
}

func (w *BatchWriter) send(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.hdrs[w.sent])), uintptr(w.n-w.sent), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			w.sent += int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait until writable
		default:
			w.errno = errno
			return true
		}
	}
}
