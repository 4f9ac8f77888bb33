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
	"net/http"
	"strings"
	"sync"
	"time"
)

// auth is HTTP Digest authentication (RFC 7616, algorithm MD5, qop auth,
// and RFC 2069 without qop, which older GA/T 1400 devices use) for
// registration, and the table of registered devices.
//
// Nonces are stateless: the issue time and an HMAC of it under a key made
// at start, so that any nonce this process issued within NonceTTL is
// accepted. Nonce counts are not tracked; a replayed Authorization can
// only register the same device again.
type auth struct {
	cfg Config
	key [32]byte

	mu      sync.Mutex
	devices map[string]time.Time // device id → registration expiry
}

func newAuth(cfg Config) *auth {
	a := &auth{cfg: cfg, devices: map[string]time.Time{}}
	_, _ = rand.Read(a.key[:]) // never fails on Linux
	return a
}

func (a *auth) nonce(now time.Time) string {
	var b [8 + 16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.Unix()))
	m := hmac.New(sha256.New, a.key[:])
	m.Write(b[:8])
	copy(b[8:], m.Sum(nil))
	return hex.EncodeToString(b[:])
}

// nonceValid reports whether n is one of ours and how old it is.
func (a *auth) nonceValid(n string, now time.Time) (ok, stale bool) {
	b, err := hex.DecodeString(n)
	if err != nil || len(b) != 24 {
		return false, false
	}
	m := hmac.New(sha256.New, a.key[:])
	m.Write(b[:8])
	if !hmac.Equal(m.Sum(nil)[:16], b[8:]) {
		return false, false
	}
	issued := time.Unix(int64(binary.BigEndian.Uint64(b[:8])), 0)
	if now.Sub(issued) > a.cfg.NonceTTL || issued.After(now.Add(time.Minute)) {
		return false, true
	}
	return true, false
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

// check verifies the request's Digest credentials and answers the
// challenge itself when they are missing or wrong.
func (a *auth) check(w http.ResponseWriter, r *http.Request, now time.Time, log *slog.Logger) bool {
	h := r.Header.Get("Authorization")
	if h == "" {
		a.challenge(w, now, false)
		return false
	}
	p, err := parseDigest(h)
	if err != nil {
		log.Info("bad Digest authorization", "err", err)
		a.challenge(w, now, false)
		return false
	}
	ok, stale := a.nonceValid(p["nonce"], now)
	if !ok {
		a.challenge(w, now, stale)
		return false
	}
	if p["username"] != a.cfg.Username || p["realm"] != a.cfg.Realm || p["uri"] != r.URL.RequestURI() {
		a.challenge(w, now, false)
		return false
	}
	if alg := p["algorithm"]; alg != "" && !strings.EqualFold(alg, "MD5") {
		a.challenge(w, now, false)
		return false
	}
	want := DigestResponse(a.cfg.Username, a.cfg.Realm, a.cfg.Password, r.Method, p["uri"], p["nonce"], p["nc"], p["cnonce"], p["qop"])
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(p["response"]))) != 1 {
		a.challenge(w, now, false)
		return false
	}
	return true
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

func parseDigest(h string) (map[string]string, error) {
	rest, ok := strings.CutPrefix(h, "Digest ")
	if !ok {
		return nil, errors.New("not a Digest header")
	}
	p := map[string]string{}
	for len(p) < 20 {
		rest = strings.TrimLeft(rest, " ,\t")
		if rest == "" {
			break
		}
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			return nil, errors.New("parameter without value")
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if strings.HasPrefix(v, `"`) {
			end := strings.IndexByte(v[1:], '"')
			if end < 0 {
				return nil, errors.New("unterminated quoted value")
			}
			p[k], rest = v[1:1+end], v[2+end:]
		} else {
			end := strings.IndexAny(v, ", ")
			if end < 0 {
				end = len(v)
			}
			p[k], rest = v[:end], v[end:]
		}
	}
	return p, nil
}

// ErrRegistryFull is returned when MaxRegistered devices are registered.
var ErrRegistryFull = errors.New("too many registered devices")

func (a *auth) register(id string, now time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.devices[id]; !ok && len(a.devices) >= a.cfg.MaxRegistered {
		for k, exp := range a.devices {
			if now.After(exp) {
				delete(a.devices, k)
			}
		}
		if len(a.devices) >= a.cfg.MaxRegistered {
			return ErrRegistryFull
		}
	}
	a.devices[id] = now.Add(a.cfg.RegistrationTTL)
	return nil
}

func (a *auth) unregister(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.devices, id)
}

func (a *auth) lookup(id string, now time.Time, extend bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	exp, ok := a.devices[id]
	if !ok || now.After(exp) {
		return false
	}
	if extend {
		a.devices[id] = now.Add(a.cfg.RegistrationTTL)
	}
	return true
}

// registered reports whether id is registered at now.
func (a *auth) registered(id string, now time.Time) bool { return a.lookup(id, now, false) }

// touch extends a live registration (a keepalive) and reports whether
// there was one.
func (a *auth) touch(id string, now time.Time) bool { return a.lookup(id, now, true) }
