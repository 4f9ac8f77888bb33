package viid

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// auth is HTTP Digest authentication (RFC 7616, algorithm MD5, qop auth,
// and RFC 2069 without qop, which older GA/T 1400 devices use) for
// registration, and the table of registered devices.
//
// A nonce is the issue time, random bytes and an HMAC of both under a
// key made at start, so that any nonce this process issued within
// NonceTTL is recognised without keeping the ones handed out to
// unauthenticated clients; only nonces used with the right password are
// kept, for their counts. With
// qop=auth the response covers neither the body nor the DeviceID in it,
// so a captured Authorization header could be sent again with another
// body; that is why each nonce count is accepted once (nonces), why a
// registration's DeviceID may be bound to the Digest username (DeviceIDIsUsername),
// and why, unless AnyAddress, a registration holds only for the address
// it came from.
type auth struct {
	cfg Config
	key [32]byte

	mu      sync.Mutex
	devices map[string]registration
	nonces  nonceTable
}

// registration is a registered device: when it lapses without a
// keepalive, and the address (IP) it registered from.
type registration struct {
	expires time.Time
	addr    string
}

func newAuth(cfg Config) *auth {
	a := &auth{cfg: cfg, devices: map[string]registration{}, nonces: newNonceTable(cfg.MaxRegistered, cfg.NonceTTL)}
	_, _ = rand.Read(a.key[:]) // never fails on Linux
	return a
}

// nonce returns a new nonce: the issue time, 8 random bytes, so that
// devices challenged in the same second do not share one (a shared nonce
// would make their first counts look like replays), and an HMAC of both.
func (a *auth) nonce(now time.Time) string {
	var b [nonceBytes]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.Unix()))
	_, _ = rand.Read(b[8:16])
	m := hmac.New(sha256.New, a.key[:])
	m.Write(b[:16])
	copy(b[16:], m.Sum(nil))
	return hex.EncodeToString(b[:])
}

// nonceBytes is the length of a nonce: time, random, MAC.
const nonceBytes = 8 + 8 + 16

// nonceValid reports whether n is one of ours, whether it is too old,
// and when (Unix seconds) it was issued.
func (a *auth) nonceValid(n string, now time.Time) (ok, stale bool, issued int64) {
	b, err := hex.DecodeString(n)
	if err != nil || len(b) != nonceBytes {
		return false, false, 0
	}
	m := hmac.New(sha256.New, a.key[:])
	m.Write(b[:16])
	if !hmac.Equal(m.Sum(nil)[:16], b[16:]) {
		return false, false, 0
	}
	issued = int64(binary.BigEndian.Uint64(b[:8]))
	t := time.Unix(issued, 0)
	if now.Sub(t) > a.cfg.NonceTTL || t.After(now.Add(time.Minute)) {
		return false, true, issued
	}
	return true, false, issued
}

// challenge answers 401 with a Digest challenge.
func (a *auth) challenge(w http.ResponseWriter, now time.Time, stale bool) {
	v := fmt.Sprintf(`Digest realm="%s", qop="auth", nonce="%s", opaque="", algorithm=MD5`, a.cfg.Realm, a.nonce(now))
	if stale {
		v += ", stale=true"
	}
	w.Header().Set("WWW-Authenticate", v)
	http.Error(w, "authentication required", http.StatusUnauthorized)
}

// check verifies the request's Digest credentials and returns the
// username; it answers the challenge itself when they are missing, wrong
// or replayed.
func (a *auth) check(w http.ResponseWriter, r *http.Request, now time.Time, log *slog.Logger) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		a.challenge(w, now, false)
		return "", false
	}
	p, err := parseDigest(h)
	if err != nil {
		log.Info("bad Digest authorization", "err", err)
		a.challenge(w, now, false)
		return "", false
	}
	ok, stale, issued := a.nonceValid(p["nonce"], now)
	if !ok {
		a.challenge(w, now, stale)
		return "", false
	}
	if p["username"] != a.cfg.Username || p["realm"] != a.cfg.Realm || p["uri"] != r.URL.RequestURI() {
		a.challenge(w, now, false)
		return "", false
	}
	if alg := p["algorithm"]; alg != "" && !strings.EqualFold(alg, "MD5") {
		a.challenge(w, now, false)
		return "", false
	}
	// RFC 2069 (no qop) has no nonce count: its nonce is good once, as
	// if its count were 1.
	nc := uint64(1)
	switch p["qop"] {
	case "":
	case "auth":
		if nc, err = parseNonceCount(p["nc"]); err != nil || p["cnonce"] == "" {
			a.challenge(w, now, false)
			return "", false
		}
	default: // auth-int is not offered
		a.challenge(w, now, false)
		return "", false
	}
	want := DigestResponse(a.cfg.Username, a.cfg.Realm, a.cfg.Password, r.Method, p["uri"], p["nonce"], p["nc"], p["cnonce"], p["qop"])
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(p["response"]))) != 1 {
		a.challenge(w, now, false)
		return "", false
	}
	// Only now, with the password proven, may the request take a place in
	// the nonce table: others cannot fill it.
	a.mu.Lock()
	fresh := a.nonces.use(p["nonce"], issued, nc, now)
	a.mu.Unlock()
	if !fresh {
		// stale=true: a device that reused its nonce takes a new one
		// without asking its user for the password again.
		log.Info("Digest nonce count used before: replay refused", "user", p["username"])
		a.challenge(w, now, true)
		return "", false
	}
	return p["username"], true
}

// parseNonceCount reads nc, 8 hexadecimal digits (RFC 7616 3.4).
func parseNonceCount(s string) (uint64, error) {
	if len(s) != 8 {
		return 0, errors.New("nc is not 8 hexadecimal digits")
	}
	return strconv.ParseUint(s, 16, 32)
}

// nonceTable holds the highest nonce count used with each nonce within
// its lifetime, so that a count is accepted once. Nonces are grouped by
// their issue second: a group goes when its nonces expire, and when the
// table is full the oldest group goes early and its second becomes the
// floor, below which every nonce is refused as stale, so that forgetting
// a nonce never lets it be replayed (its device just takes a new one).
type nonceTable struct {
	max   int
	ttl   time.Duration
	n     int
	floor int64 // nonces issued at or before this Unix second are refused
	by    map[int64]map[string]uint64
}

func newNonceTable(max int, ttl time.Duration) nonceTable {
	return nonceTable{max: max, ttl: ttl, floor: math.MinInt64, by: map[int64]map[string]uint64{}}
}

// use records that nonce, issued at Unix second issued, came with count
// nc; false when it came with nc or a higher count before, or was
// forgotten.
func (t *nonceTable) use(nonce string, issued int64, nc uint64, now time.Time) bool {
	if issued <= t.floor {
		return false
	}
	g, ok := t.by[issued]
	if prev, seen := g[nonce]; seen {
		if nc <= prev {
			return false
		}
		g[nonce] = nc
		return true
	}
	if !ok || t.n >= t.max {
		t.expire(now) // at most once a second, or when full
	}
	for t.n >= t.max {
		t.forgetOldest()
		if issued <= t.floor {
			return false
		}
	}
	if g = t.by[issued]; g == nil {
		g = map[string]uint64{}
		t.by[issued] = g
	}
	g[nonce] = nc
	t.n++
	return true
}

// expire drops the groups whose nonces nonceValid no longer accepts.
func (t *nonceTable) expire(now time.Time) {
	oldest := now.Add(-t.ttl).Unix()
	for s, g := range t.by {
		if s < oldest {
			t.n -= len(g)
			delete(t.by, s)
		}
	}
}

func (t *nonceTable) forgetOldest() {
	first := true
	var oldest int64
	for s := range t.by {
		if first || s < oldest {
			oldest, first = s, false
		}
	}
	t.n -= len(t.by[oldest])
	delete(t.by, oldest)
	t.floor = max(t.floor, oldest)
}

// DigestResponse computes the response of RFC 7616 (MD5; qop "auth", or
// RFC 2069 when qop is empty). Clients (the simulators) use it too.
func DigestResponse(user, realm, password, method, uri, nonce, nc, cnonce, qop string) string {
	ha1 := md5hex(user + ":" + realm + ":" + password)
	ha2 := md5hex(method + ":" + uri)
	if qop == "" {
		return md5hex(ha1 + ":" + nonce + ":" + ha2)
	}
	return md5hex(ha1 + ":" + nonce + ":" + nc + ":" + cnonce + ":" + qop + ":" + ha2)
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// ParseChallenge returns the parameters of a Digest WWW-Authenticate or
// Authorization header value.
func ParseChallenge(h string) (map[string]string, error) { return parseDigest(h) }

// parseDigest reads the parameters of a Digest header, names in lower
// case; quoted values may hold backslash escapes (RFC 7616 quoted-string).
// It reads at most maxDigestParams parameters and refuses one given twice.
func parseDigest(h string) (map[string]string, error) {
	if len(h) < 7 || !strings.EqualFold(h[:6], "Digest") || h[6] != ' ' && h[6] != '\t' {
		return nil, errors.New("not a Digest header")
	}
	rest := h[7:]
	p := map[string]string{}
	for len(p) < maxDigestParams {
		rest = strings.TrimLeft(rest, " ,\t")
		if rest == "" {
			break
		}
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			return nil, errors.New("parameter without value")
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if k == "" {
			return nil, errors.New("value without parameter name")
		}
		if _, dup := p[k]; dup {
			return nil, fmt.Errorf("parameter %q given twice", shorten(k))
		}
		v = strings.TrimLeft(v, " \t")
		if strings.HasPrefix(v, `"`) {
			val, n, err := quoted(v)
			if err != nil {
				return nil, err
			}
			p[k], rest = val, v[n:]
		} else {
			end := strings.IndexAny(v, ", \t")
			if end < 0 {
				end = len(v)
			}
			p[k], rest = v[:end], v[end:]
		}
	}
	return p, nil
}

// maxDigestParams bounds the parameters read from one header; RFC 7616
// defines 12.
const maxDigestParams = 20

// quoted reads the quoted-string at the start of v and returns its value
// and the bytes it took.
func quoted(v string) (string, int, error) {
	escaped := false
	for i := 1; i < len(v); i++ {
		switch v[i] {
		case '\\':
			escaped = true
			i++
		case '"':
			if !escaped {
				return v[1:i], i + 1, nil
			}
			var b strings.Builder
			for j := 1; j < i; j++ {
				if v[j] == '\\' {
					j++
				}
				b.WriteByte(v[j])
			}
			return b.String(), i + 1, nil
		}
	}
	return "", 0, errors.New("unterminated quoted value")
}

// ErrRegistryFull is returned when MaxRegistered devices are registered.
var ErrRegistryFull = errors.New("too many registered devices")

// register registers id from addr (an IP) until now+RegistrationTTL.
func (a *auth) register(id, addr string, now time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.devices[id]; !ok && len(a.devices) >= a.cfg.MaxRegistered {
		for k, reg := range a.devices {
			if now.After(reg.expires) {
				delete(a.devices, k)
			}
		}
		if len(a.devices) >= a.cfg.MaxRegistered {
			return ErrRegistryFull
		}
	}
	a.devices[id] = registration{expires: now.Add(a.cfg.RegistrationTTL), addr: addr}
	return nil
}

func (a *auth) unregister(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.devices, id)
}

// Why a device may not push or keep alive.
const (
	notRegistered     = "device not registered"
	otherAddress      = "device registered from another address"
	registrationLapse = "registration expired"
)

// lookup checks that id has a live registration for a request from addr,
// extends it when extend (a keepalive), and returns why not otherwise.
func (a *auth) lookup(id, addr string, now time.Time, extend bool) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	reg, ok := a.devices[id]
	switch {
	case !ok:
		return notRegistered
	case now.After(reg.expires):
		return registrationLapse
	case !a.cfg.AnyAddress && reg.addr != addr:
		return otherAddress
	}
	if extend {
		reg.expires = now.Add(a.cfg.RegistrationTTL)
		a.devices[id] = reg
	}
	return ""
}
