package kafkaio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"time"
	"unsafe"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
)

// fetcher reads a partition with Fetch requests of its own over a leader
// connection that kafka-go dialled, secured and logged in
// (OpenPartition), and parses the record batches itself. kafka-go's
// Batch.ReadMessage read a record through a buffered stream field by
// field and allocated its key, value and headers: about 0.55 µs a record,
// as much as decoding the event in it, and the largest cost of a
// restart's replay (BENCHMARKS.md). Here a fetch's response is read whole,
// each batch is checked (CRC-32C) and inflated whole, and the records are
// slices of it.
//
// Ownership: the Key, Value and Headers of the messages a fetch returns
// point into buffers that are never written again (a new one is made for
// each compressed batch, and for each response that holds an
// uncompressed batch), so a caller may keep them, or strings over them,
// as long as it likes; keeping one keeps its whole batch in memory.
type fetcher struct {
	conn      net.Conn
	topic     string
	partition int
	clientID  string
	corr      int32
	req       []byte
	body      []byte // the last response, reused when no message points into it
	hdr       [8]byte
	batches   batches         // the last response's, read one at a time
	msgs      []kafka.Message // the last batch's records
	broken    error           // the exchange that failed midway: the socket is out of step
	highWater int64           // the partition's high watermark at the last response
}

// fetchVersion is the Fetch request version the fetcher speaks: the
// oldest that Kafka 4 still serves (KIP-896), and enough for record
// batches (magic 2), which every broker since 0.11 stores.
const fetchVersion = 4

// maxResponseBytes bounds the response a fetcher reads: a broker returns
// at least one whole batch, however large, but no broker's limit on one
// comes near this.
const maxResponseBytes = 1 << 30

// maxInflatedBytes bounds what one compressed batch may inflate to.
const maxInflatedBytes = 256 << 20

// ErrMalformedBatch is wrapped by the errors of a record batch that cannot
// be read: a wrong checksum, a length past its end, an unknown format.
var ErrMalformedBatch = errors.New("malformed record batch")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fetch asks for the records of the partition from offset next on, up to
// maxBytes (a broker returns a first batch larger than that whole), and
// reads the response; batch then reads its batches one at a time. A
// response is read whole, but parsed a batch at a time: a fetch of 16 MiB
// parsed at once made a slice of some 50,000 messages, grown and copied
// as it went.
func (f *fetcher) fetch(next int64, maxBytes int32, wait time.Duration) (err error) {
	if f.broken != nil {
		return f.broken
	}
	defer func() {
		var me malformed
		if err != nil && !errors.As(err, &me) {
			f.broken = err
		}
	}()
	f.corr++
	f.req = appendFetchRequest(f.req[:0], f.corr, f.clientID, f.topic, int32(f.partition), next, maxBytes, wait)
	if err := f.conn.SetDeadline(time.Now().Add(wait + readTimeout)); err != nil {
		return err
	}
	if _, err := f.conn.Write(f.req); err != nil {
		return fmt.Errorf("cannot send a fetch: %w", err)
	}
	if _, err := io.ReadFull(f.conn, f.hdr[:]); err != nil {
		return fmt.Errorf("cannot read a fetch response: %w", err)
	}
	size := int64(int32(binary.BigEndian.Uint32(f.hdr[:4]))) - 4
	if corr := int32(binary.BigEndian.Uint32(f.hdr[4:])); corr != f.corr {
		return fmt.Errorf("cannot read a fetch response: correlation id %d, want %d", corr, f.corr)
	}
	if size < 0 || size > maxResponseBytes {
		return fmt.Errorf("cannot read a fetch response: size %d", size)
	}
	if f.batches.held || int64(cap(f.body)) < size {
		f.body = make([]byte, size)
	}
	f.body = f.body[:size]
	f.batches = batches{inflated: f.batches.inflated}
	if _, err := io.ReadFull(f.conn, f.body); err != nil {
		return fmt.Errorf("cannot read a fetch response: %w", err)
	}
	records, high, err := fetchedRecords(f.body, f.topic, int32(f.partition))
	if err != nil {
		return malformed{err}
	}
	f.batches.rest, f.highWater = records, high
	return nil
}

// malformed is an error in a response read whole: the socket is still in
// step.
type malformed struct{ error }

func (e malformed) Unwrap() error { return e.error }

// batch replaces f.msgs with the records of the last response's next
// batch; false when it has no whole batch left. A control batch gives
// none.
func (f *fetcher) batch() (bool, error) {
	clear(f.msgs) // what they point to may go
	var ok bool
	var err error
	f.msgs, ok, err = f.batches.next(f.msgs[:0], f.topic, f.partition)
	return ok, err
}

// drop forgets the last response.
func (f *fetcher) drop() {
	clear(f.msgs)
	f.msgs = f.msgs[:0]
	f.batches.rest, f.batches.after = nil, 0
}

// appendFetchRequest appends a Fetch request (version fetchVersion) for one
// partition, with its size prefix, to b.
func appendFetchRequest(b []byte, corr int32, clientID, topic string, partition int32, offset int64, maxBytes int32, wait time.Duration) []byte {
	start := len(b)
	b = binary.BigEndian.AppendUint32(b, 0) // size, below
	b = binary.BigEndian.AppendUint16(b, 1) // Fetch
	b = binary.BigEndian.AppendUint16(b, fetchVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(corr))
	b = appendString(b, clientID)
	b = binary.BigEndian.AppendUint32(b, 0xFFFFFFFF) // replica id -1: a consumer
	b = binary.BigEndian.AppendUint32(b, uint32(wait.Milliseconds()))
	b = binary.BigEndian.AppendUint32(b, 1) // min bytes
	b = binary.BigEndian.AppendUint32(b, uint32(maxBytes))
	b = append(b, 0)                        // read uncommitted: citywatch writes no transactions
	b = binary.BigEndian.AppendUint32(b, 1) // topics
	b = appendString(b, topic)
	b = binary.BigEndian.AppendUint32(b, 1) // partitions
	b = binary.BigEndian.AppendUint32(b, uint32(partition))
	b = binary.BigEndian.AppendUint64(b, uint64(offset))
	b = binary.BigEndian.AppendUint32(b, uint32(maxBytes))
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// wire reads the big-endian fields of a response; the first read past the
// end sets short, and every read after it returns zero.
type wire struct {
	b     []byte
	short bool
}

func (w *wire) take(n int) []byte {
	if w.short || n < 0 || n > len(w.b) {
		w.short = true
		return nil
	}
	p := w.b[:n:n]
	w.b = w.b[n:]
	return p
}

func (w *wire) int16() int16 {
	if p := w.take(2); p != nil {
		return int16(binary.BigEndian.Uint16(p))
	}
	return 0
}

func (w *wire) int32() int32 {
	if p := w.take(4); p != nil {
		return int32(binary.BigEndian.Uint32(p))
	}
	return 0
}

func (w *wire) int64() int64 {
	if p := w.take(8); p != nil {
		return int64(binary.BigEndian.Uint64(p))
	}
	return 0
}

func (w *wire) string() []byte { return w.take(int(w.int16())) }

// varint reads a zig-zag varint, as records write their fields.
func (w *wire) varint() int64 {
	if w.short {
		return 0
	}
	v, n := binary.Varint(w.b)
	if n <= 0 {
		w.short = true
		return 0
	}
	w.b = w.b[n:]
	return v
}

// bytes reads a varint length and that many bytes; nil for length -1.
func (w *wire) bytes() []byte {
	n := w.varint()
	if n < 0 {
		return nil
	}
	if n > int64(len(w.b)) {
		w.short = true
		return nil
	}
	return w.take(int(n))
}

// fetchedRecords returns the records field of partition of topic in a
// Fetch response body (version fetchVersion, after the correlation id), or
// the partition's error.
func fetchedRecords(body []byte, topic string, partition int32) ([]byte, int64, error) {
	w := wire{b: body}
	w.int32() // throttle time
	for range w.int32() {
		name := w.string()
		for range w.int32() {
			p := w.int32()
			code := w.int16()
			high := w.int64()
			w.int64() // last stable offset
			if n := w.int32(); n > 0 {
				w.take(16 * int(n)) // aborted transactions
			}
			n := w.int32()
			var records []byte
			if n > 0 {
				records = w.take(int(n))
			}
			if w.short {
				return nil, 0, errors.New("cannot read a fetch response: it ends early")
			}
			if string(name) == topic && p == partition {
				if code != 0 {
					return nil, 0, fmt.Errorf("cannot fetch %s/%d: %w", topic, partition, kafka.Error(code))
				}
				return records, high, nil
			}
		}
		if w.short {
			break
		}
	}
	return nil, 0, fmt.Errorf("cannot read a fetch response: it has no %s/%d", topic, partition)
}

// Record batch attributes (Kafka's DefaultRecordBatch).
const (
	batchCompression   = 0x07
	batchLogAppendTime = 0x08
	batchControl       = 0x20
	batchHeaderSize    = 61 // up to and with the record count
)

// batches reads the record batches of a fetch's records field, one at a
// time.
type batches struct {
	rest     []byte // the batches not read yet
	after    int64  // the offset after the last batch read, control batches included
	held     bool   // a message read points into rest's buffer (an uncompressed batch)
	inflated int    // the size of the last batch inflated: the next one's first guess
}

// next appends the records of the next batch to msgs. It returns false
// when no whole batch is left: a batch cut short at the end, as a broker
// may send one, comes whole with the next fetch. After an error there is
// none.
func (bs *batches) next(msgs []kafka.Message, topic string, partition int) ([]kafka.Message, bool, error) {
	b := bs.rest
	if len(b) < 12 {
		return msgs, false, nil
	}
	base := int64(binary.BigEndian.Uint64(b))
	size := int64(int32(binary.BigEndian.Uint32(b[8:]))) + 12
	if size > int64(len(b)) {
		return msgs, false, nil
	}
	bs.rest = nil // until it is read
	if size < batchHeaderSize {
		return msgs, false, fmt.Errorf("%w at offset %d: length %d", ErrMalformedBatch, base, size-12)
	}
	batch := b[:size:size]
	if magic := batch[16]; magic != 2 {
		return msgs, false, fmt.Errorf("%w at offset %d: record format %d, not 2 (Kafka 0.11 and later)", ErrMalformedBatch, base, magic)
	}
	if crc := binary.BigEndian.Uint32(batch[17:]); crc32.Checksum(batch[21:], castagnoli) != crc {
		return msgs, false, fmt.Errorf("%w at offset %d: checksum mismatch", ErrMalformedBatch, base)
	}
	attrs := binary.BigEndian.Uint16(batch[21:])
	last := base + int64(int32(binary.BigEndian.Uint32(batch[23:])))
	first := int64(binary.BigEndian.Uint64(batch[27:]))
	maxTime := int64(binary.BigEndian.Uint64(batch[35:]))
	count := int32(binary.BigEndian.Uint32(batch[57:]))
	bs.after = max(bs.after, last+1)
	if attrs&batchControl != 0 {
		bs.rest = b[size:]
		return msgs, true, nil // a transaction's marker
	}
	records := batch[batchHeaderSize:]
	if c := compress.Compression(attrs & batchCompression); c != compress.None {
		var err error
		if records, err = inflate(c, records, &bs.inflated); err != nil {
			return msgs, false, fmt.Errorf("%w at offset %d: %w", ErrMalformedBatch, base, err)
		}
	} else if count > 0 {
		bs.held = true
	}
	var hdrs []kafka.Header
	w := wire{b: records}
	for i := int32(0); i < count; i++ {
		n := w.varint()
		if w.short || n < 0 || n > int64(len(w.b)) {
			return msgs, false, fmt.Errorf("%w at offset %d: record %d runs past the batch", ErrMalformedBatch, base, i)
		}
		r := wire{b: w.take(int(n))}
		r.take(1) // attributes
		at := first + r.varint()
		if attrs&batchLogAppendTime != 0 {
			at = maxTime
		}
		off := base + r.varint()
		if off < base || off > last {
			return msgs, false, fmt.Errorf("%w at offset %d: record %d has offset %d, outside the batch", ErrMalformedBatch, base, i, off)
		}
		m := kafka.Message{Topic: topic, Partition: partition, Offset: off, Time: recordTime(at)}
		m.Key = r.bytes()
		m.Value = r.bytes()
		if nh := r.varint(); nh > 0 && !r.short {
			if nh > int64(len(r.b)) {
				r.short = true
			} else {
				if hdrs == nil {
					// As many for every record as this one has; a
					// header takes two bytes at least.
					hdrs = make([]kafka.Header, 0, min(int64(count)*nh, int64(len(records)/2)))
				}
				from := len(hdrs)
				for range nh {
					k := r.bytes()
					hdrs = append(hdrs, kafka.Header{Key: bytesString(k), Value: r.bytes()})
				}
				m.Headers = hdrs[from:len(hdrs):len(hdrs)]
			}
		}
		if r.short {
			return msgs, false, fmt.Errorf("%w at offset %d: record %d is cut short", ErrMalformedBatch, base, i)
		}
		msgs = append(msgs, m)
	}
	bs.rest = b[size:]
	return msgs, true, nil
}

// appendRecords appends the records of every whole batch in b to msgs.
func appendRecords(msgs []kafka.Message, b []byte, topic string, partition int) ([]kafka.Message, *batches, error) {
	bs := &batches{rest: b}
	for {
		var ok bool
		var err error
		if msgs, ok, err = bs.next(msgs, topic, partition); err != nil || !ok {
			return msgs, bs, err
		}
	}
}

// inflate decompresses a batch's records into a new buffer.
func inflate(c compress.Compression, b []byte, guess *int) ([]byte, error) {
	codec := c.Codec()
	if codec == nil {
		return nil, fmt.Errorf("unknown compression %d", c)
	}
	r := codec.NewReader(bytes.NewReader(b))
	defer r.Close()
	// Room for the last batch's size and a margin, so that the read that
	// meets the end finds room and nothing is copied: batches of one
	// writer are alike.
	size := 4 * len(b)
	if g := *guess; g > 0 && g < 16*len(b) {
		size = g + g/8
	}
	out := make([]byte, 0, size+512)
	for {
		if len(out) == cap(out) {
			if len(out) >= maxInflatedBytes {
				return nil, fmt.Errorf("%s batch inflates past %d bytes", codec.Name(), maxInflatedBytes)
			}
			out = append(out, 0)[:len(out)]
		}
		n, err := r.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("cannot inflate %s: %w", codec.Name(), err)
		}
	}
	*guess = len(out)
	return out[:len(out):len(out)], nil
}

// recordTime is a record's time as kafka-go gives it: UTC, zero for none.
func recordTime(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// bytesString returns b as a string without a copy: b is never written
// again (fetcher).
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
