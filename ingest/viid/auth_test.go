package viid

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"citywatch/event"
)

const (
	testUser = "42060000005030000001" // a platform's own id, as GA/T 1400 registers
	testPass = "s3cret"
)

// device talks to a handler directly, from the address it chooses.
type device struct {
	t    *testing.T
	h    http.Handler
	addr string // host:port
}

func (d device) do(path, body string, hdr map[string]string) *httptest.ResponseRecorder {
	d.t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.RemoteAddr = d.addr
	req.Header.Set("Content-Type", "application/VIID+JSON")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	d.h.ServeHTTP(rec, req)
	return rec
}

// challenge asks for a Digest challenge, as a device's first Register.
func (d device) challenge() map[string]string {
	d.t.Helper()
	rec := d.do(PathRegister, registerBody("x"), nil)
	ch, err := ParseChallenge(rec.Header().Get("WWW-Authenticate"))
	if rec.Code != http.StatusUnauthorized || err != nil {
		d.t.Fatalf("first register: HTTP %d %v", rec.Code, err)
	}
	return ch
}

// register registers id with user's credentials from a fresh challenge.
func (d device) register(user, id string) int {
	d.t.Helper()
	ch := d.challenge()
	h := digestHeader(user, testPass, ch["realm"], ch["nonce"], PathRegister, "00000001", "0a4f113b", "auth")
	return d.do(PathRegister, registerBody(id), map[string]string{"Authorization": h}).Code
}

func registerBody(id string) string { return `{"RegisterObject":{"DeviceID":"` + id + `"}}` }

func digestHeader(user, pass, realm, nonce, uri, nc, cnonce, qop string) string {
	r := DigestResponse(user, realm, pass, "POST", uri, nonce, nc, cnonce, qop)
	h := `Digest username="` + user + `", realm="` + realm + `", nonce="` + nonce + `", uri="` + uri + `", response="` + r + `", algorithm=MD5`
	if qop != "" {
		h += `, qop=` + qop + `, nc=` + nc + `, cnonce="` + cnonce + `"`
	}
	return h
}

// TestDigestRegister sends Register requests answering one challenge:
// each nonce count is good once, the DeviceID must be the username with
// device_id_is_username, and a replayed header cannot register another
// body.
func TestDigestRegister(t *testing.T) {
	type send struct {
		pass, qop, nc, device string
		want                  int
		stale                 bool
	}
	ok := func(nc, device string) send { return send{testPass, "auth", nc, device, 200, false} }
	replay := func(nc, device string) send { return send{testPass, "auth", nc, device, 401, true} }
	tests := []struct {
		name   string
		bindID bool
		sends  []send
	}{
		{"own id", true, []send{ok("00000001", testUser)}},
		{"wrong password", false, []send{{"wrong", "auth", "00000001", testUser, 401, false}}},
		{"another DeviceID, device_id_is_username", true, []send{{testPass, "auth", "00000001", "kk-001", 403, false}}},
		{"another DeviceID", false, []send{ok("00000001", "kk-001")}},
		{"nonce count once, rising", false, []send{
			ok("00000001", testUser), replay("00000001", testUser), ok("00000002", testUser),
			replay("00000002", testUser), replay("00000001", testUser), ok("0000000a", testUser)}},
		{"replayed header with another body", false, []send{ok("00000001", "cam-a-00001"), replay("00000001", "kk-001")}},
		{"RFC 2069 nonce once", false, []send{{testPass, "", "", testUser, 200, false}, {testPass, "", "", testUser, 401, true}}},
		{"qop auth without nc", false, []send{{testPass, "auth", "", testUser, 401, false}}},
		{"nc not hexadecimal", false, []send{{testPass, "auth", "0000000g", testUser, 401, false}}},
		{"qop auth-int", false, []send{{testPass, "auth-int", "00000001", testUser, 401, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, mux := newHandler(t, Config{Username: testUser, Password: testPass, DeviceIDIsUsername: tt.bindID}, &fakePub{})
			d := device{t, mux, "192.0.2.1:40000"}
			ch := d.challenge()
			for i, s := range tt.sends {
				h := digestHeader(testUser, s.pass, ch["realm"], ch["nonce"], PathRegister, s.nc, "0a4f113b", s.qop)
				rec := d.do(PathRegister, registerBody(s.device), map[string]string{"Authorization": h})
				stale := strings.Contains(rec.Header().Get("WWW-Authenticate"), "stale=true")
				if rec.Code != s.want || stale != s.stale {
					t.Errorf("send %d: HTTP %d stale %v, want %d stale %v (%s)", i, rec.Code, stale, s.want, s.stale, rec.Body)
				}
			}
		})
	}
}

// TestPushNeedsRegistration: with authentication on, a push or keepalive
// names a device with a live registration made from the same address;
// keepalives renew it; records for other devices are accepted and
// counted.
func TestPushNeedsRegistration(t *testing.T) {
	const cam = "cam-a-00001"
	pub := &fakePub{}
	s, mux := newHandler(t, Config{Username: cam, Password: testPass, RegistrationTTL: time.Hour}, pub)
	now := testNow
	s.now = func() time.Time { return now }
	a := device{t, mux, "192.0.2.1:40000"}
	b := device{t, mux, "192.0.2.2:40000"}
	face := func(dev string) string {
		return `{"FaceListObject":{"FaceObject":[{"FaceID":"f-` + dev + `","DeviceID":"` + dev + `","ShotTime":"20261126081540"}]}}`
	}
	as := func(id string) map[string]string { return map[string]string{"User-Identify": id} }
	keepalive := `{"KeepaliveObject":{"DeviceID":"` + cam + `"}}`
	steps := []struct {
		name    string
		advance time.Duration
		run     func() *httptest.ResponseRecorder
		want    int
		reason  string
	}{
		{"push before register", 0, func() *httptest.ResponseRecorder { return a.do(PathFaces, face(cam), as(cam)) }, 401, notRegistered},
		{"register", 0, func() *httptest.ResponseRecorder {
			rec := httptest.NewRecorder()
			rec.Code = a.register(cam, cam)
			return rec
		}, 200, ""},
		{"push without User-Identify", 0, func() *httptest.ResponseRecorder { return a.do(PathFaces, face(cam), nil) }, 401, notRegistered},
		{"push as a device not registered", 0, func() *httptest.ResponseRecorder { return a.do(PathFaces, face(cam), as("cam-b-00002")) }, 401, notRegistered},
		{"push from another address", 0, func() *httptest.ResponseRecorder { return b.do(PathFaces, face(cam), as(cam)) }, 401, otherAddress},
		{"keepalive from another address", 0, func() *httptest.ResponseRecorder { return b.do(PathKeepalive, keepalive, nil) }, 401, otherAddress},
		{"push own record", 0, func() *httptest.ResponseRecorder { return a.do(PathFaces, face(cam), as(cam)) }, 200, ""},
		{"push another device's record", 0, func() *httptest.ResponseRecorder { return a.do(PathFaces, face("cam-b-00002"), as(cam)) }, 200, ""},
		{"keepalive renews", 50 * time.Minute, func() *httptest.ResponseRecorder { return a.do(PathKeepalive, keepalive, nil) }, 200, ""},
		{"push after the first hour", 50 * time.Minute, func() *httptest.ResponseRecorder { return a.do(PathFaces, face(cam), as(cam)) }, 200, ""},
		{"push after the registration lapsed", 61 * time.Minute, func() *httptest.ResponseRecorder { return a.do(PathFaces, face(cam), as(cam)) }, 401, registrationLapse},
	}
	for _, st := range steps {
		now = now.Add(st.advance)
		rec := st.run()
		if rec.Code != st.want || !strings.Contains(rec.Body.String(), st.reason) {
			t.Fatalf("%s: HTTP %d %s, want %d %q", st.name, rec.Code, rec.Body, st.want, st.reason)
		}
	}
	if n := testutil.ToFloat64(s.met.foreign.WithLabelValues(PathFaces)); n != 1 {
		t.Errorf("foreign records %v, want 1", n)
	}
	var kinds []string
	for _, e := range pub.evs {
		kinds = append(kinds, e.Type.String()+" "+e.DeviceID)
	}
	want := []string{"camera.detection " + cam, "camera.detection cam-b-00002", "device.heartbeat " + cam, "camera.detection " + cam}
	if strings.Join(kinds, ",") != strings.Join(want, ",") {
		t.Errorf("published %v, want %v", kinds, want)
	}
}

// TestAnyAddress: a platform whose requests leave from several addresses
// pushes from any of them when any_address is set.
func TestAnyAddress(t *testing.T) {
	for _, anyAddr := range []bool{false, true} {
		_, mux := newHandler(t, Config{Username: testUser, Password: testPass, AnyAddress: anyAddr}, &fakePub{})
		a := device{t, mux, "192.0.2.1:40000"}
		b := device{t, mux, "192.0.2.2:40001"}
		if code := a.register(testUser, testUser); code != 200 {
			t.Fatalf("register: HTTP %d", code)
		}
		want := 401
		if anyAddr {
			want = 200
		}
		body := `{"FaceListObject":{"FaceObject":[{"FaceID":"f-1","DeviceID":"cam-a-00001","ShotTime":"20261126081540"}]}}`
		if rec := b.do(PathFaces, body, map[string]string{"User-Identify": testUser}); rec.Code != want {
			t.Errorf("any_address %v: push from another address: HTTP %d, want %d", anyAddr, rec.Code, want)
		}
	}
}

// TestUnregister: with device_id_is_username, a device unregisters
// itself, not another.
func TestUnregister(t *testing.T) {
	_, mux := newHandler(t, Config{Username: testUser, Password: testPass, DeviceIDIsUsername: true}, &fakePub{})
	d := device{t, mux, "192.0.2.1:40000"}
	if code := d.register(testUser, testUser); code != 200 {
		t.Fatalf("register: HTTP %d", code)
	}
	unregister := func(id string) int {
		ch := d.challenge()
		h := digestHeader(testUser, testPass, ch["realm"], ch["nonce"], PathUnregister, "00000001", "abc", "auth")
		return d.do(PathUnregister, `{"UnRegisterObject":{"DeviceID":"`+id+`"}}`, map[string]string{"Authorization": h}).Code
	}
	if code := unregister("kk-001"); code != 403 {
		t.Errorf("unregister another device: HTTP %d, want 403", code)
	}
	if code := unregister(testUser); code != 200 {
		t.Errorf("unregister: HTTP %d", code)
	}
	body := `{"FaceListObject":{"FaceObject":[]}}`
	if rec := d.do(PathFaces, body, map[string]string{"User-Identify": testUser}); rec.Code != 401 {
		t.Errorf("push after unregister: HTTP %d, want 401", rec.Code)
	}
}

// TestNonceTable: a count is good once and must rise; a full table
// forgets its oldest second and refuses the nonces of it and before as
// stale rather than let them be replayed; expired nonces make room.
func TestNonceTable(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	sec := now.Unix()
	type use struct {
		nonce  string
		issued int64
		nc     uint64
		want   bool
	}
	tests := []struct {
		name string
		max  int
		uses []use
		n    int // entries after
	}{
		{"count rises", 10, []use{{"a", sec, 1, true}, {"a", sec, 1, false}, {"a", sec, 3, true}, {"a", sec, 2, false}, {"b", sec, 1, true}}, 2},
		{"full: oldest second forgotten, and refused", 2, []use{
			{"a", sec - 2, 1, true}, {"b", sec - 1, 1, true}, {"c", sec, 1, true},
			{"a", sec - 2, 2, false}, {"d", sec - 2, 1, false}, {"b", sec - 1, 2, true}}, 2},
		{"one second fills the table", 2, []use{{"a", sec, 1, true}, {"b", sec, 1, true}, {"c", sec, 1, false}}, 0},
		{"expired make room", 1, []use{{"a", sec - 600, 1, true}, {"b", sec, 1, true}, {"b", sec, 1, false}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nt := newNonceTable(tt.max, 5*time.Minute)
			for i, u := range tt.uses {
				if got := nt.use(u.nonce, u.issued, u.nc, now); got != u.want {
					t.Errorf("use %d %+v = %v", i, u, got)
				}
				if nt.n > tt.max {
					t.Fatalf("use %d: %d entries, max %d", i, nt.n, tt.max)
				}
			}
			if tt.n != 0 && nt.n != tt.n {
				t.Errorf("%d entries, want %d", nt.n, tt.n)
			}
		})
	}
}

// TestAuthOffWarning: without credentials the server says so at start,
// naming the fields that turn authentication on.
func TestAuthOffWarning(t *testing.T) {
	for _, user := range []string{"", testUser} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		if _, err := New(Config{Username: user, Password: testPass}, devices, shanghai, &fakePub{}, prometheus.NewRegistry(), log); err != nil {
			t.Fatal(err)
		}
		warned := strings.Contains(buf.String(), "level=WARN") && strings.Contains(buf.String(), "gateway.viid.username") &&
			strings.Contains(buf.String(), "gateway.viid.password")
		if warned != (user == "") {
			t.Errorf("username %q: log %q", user, buf.String())
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		field string // "" when valid
	}{
		{"defaults", Config{}, ""},
		{"max_in_flight", Config{MaxInFlight: -1}, "gateway.viid.max_in_flight:"},
		{"max_in_flight_bytes below a body", Config{MaxBodyBytes: 1 << 20, MaxInFlightBytes: 1 << 19}, "gateway.viid.max_in_flight_bytes:"},
		{"per address above the total", Config{MaxInFlight: 4, MaxInFlightPerAddress: 5}, "gateway.viid.max_in_flight_per_address:"},
		{"per address bytes below a body", Config{MaxBodyBytes: 1 << 20, MaxInFlightBytesPerAddress: 1 << 19}, "gateway.viid.max_in_flight_bytes_per_address:"},
		{"password", Config{Username: "u"}, "gateway.viid.password:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.SetDefaults()
			err := cfg.Validate()
			if tt.field == "" && err != nil || tt.field != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.field)) {
				t.Errorf("Validate() = %v, want %q", err, tt.field)
			}
		})
	}
	var c Config
	c.SetDefaults()
	if c.MaxInFlight != 256 || c.MaxInFlightBytes != 8*c.MaxBodyBytes {
		t.Errorf("defaults %d %d", c.MaxInFlight, c.MaxInFlightBytes)
	}
}

// blockingPub holds every Publish until release is closed, telling
// entered each time one starts.
type blockingPub struct {
	entered chan struct{}
	release chan struct{}
}

func (p *blockingPub) Publish(ctx context.Context, _ []event.Event) error {
	p.entered <- struct{}{}
	select {
	case <-p.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestInFlightLimit: requests beyond max_in_flight, or whose bodies do
// not fit in max_in_flight_bytes, are answered 503 with Retry-After at
// once, counted by reason, while the ones in flight wait for Kafka.
func TestInFlightLimit(t *testing.T) {
	face := func(id string) []byte {
		return []byte(`{"FaceListObject":{"FaceObject":[{"FaceID":"` + id + `","DeviceID":"cam-a-00001","ShotTime":"20261126081540"}]}}`)
	}
	big := bytes.Repeat([]byte(" "), 3000) // JSON whitespace: a larger body, the same record
	tests := []struct {
		name    string
		cfg     Config
		holding [][]byte // bodies of the requests held in Publish
		extra   []byte
		reason  string
	}{
		{"requests", Config{MaxInFlight: 2, MaxInFlightPerAddress: 2}, [][]byte{face("a"), face("b")}, face("c"), "in_flight_requests"},
		{"bytes", Config{MaxBodyBytes: 4096, MaxInFlightBytes: 4096}, [][]byte{append(face("a"), big...)}, append(face("c"), big[:1500]...), "in_flight_bytes"},
		// The test's requests all come from one address.
		{"address requests", Config{MaxInFlight: 8, MaxInFlightPerAddress: 2}, [][]byte{face("a"), face("b")}, face("c"), "address_requests"},
		{"address bytes", Config{MaxBodyBytes: 4096, MaxInFlightBytes: 16384, MaxInFlightBytesPerAddress: 4096},
			[][]byte{append(face("a"), big...)}, append(face("c"), big[:1500]...), "address_bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &blockingPub{entered: make(chan struct{}), release: make(chan struct{})}
			tt.cfg.RetryAfter = 3 * time.Second
			srv, s := newTestServerS(t, tt.cfg, pub)
			done := make(chan int, len(tt.holding))
			for _, body := range tt.holding {
				go func() {
					resp, err := http.Post(srv.URL+PathFaces, "application/VIID+JSON", bytes.NewReader(body))
					if err != nil {
						done <- 0
						return
					}
					resp.Body.Close()
					done <- resp.StatusCode
				}()
				<-pub.entered
			}
			resp, a := post(t, srv.URL+PathFaces, tt.extra, nil)
			ss := a.ResponseStatusListObject.ResponseStatusObject
			if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "3" || len(ss) != 1 || ss[0].StatusCode != codeDeviceBusy {
				t.Errorf("beyond the limit: HTTP %d Retry-After %q %+v", resp.StatusCode, resp.Header.Get("Retry-After"), ss)
			}
			if n := testutil.ToFloat64(s.met.dropped.WithLabelValues(PathFaces, tt.reason)); n != 1 {
				t.Errorf("dropped{reason=%s} = %v, want 1", tt.reason, n)
			}
			close(pub.release)
			for range tt.holding {
				if code := <-done; code != 200 {
					t.Errorf("request in flight: HTTP %d", code)
				}
			}
			go func() { <-pub.entered }()
			if resp, _ := post(t, srv.URL+PathFaces, tt.extra, nil); resp.StatusCode != 200 {
				t.Errorf("after the others: HTTP %d", resp.StatusCode)
			}
			if n, b := s.limit.inFlight(); n != 0 || b != 0 {
				t.Errorf("in flight after all answered: %d requests, %d bytes", n, b)
			}
		})
	}
}

// TestLimiterShares: an address at its share is refused while another is
// admitted, and an address leaves the table with its last request.
func TestLimiterShares(t *testing.T) {
	l := limiter{maxN: 4, maxBytes: 1000, addrN: 2, addrBytes: 600, byAddr: map[string]held{}}
	steps := []struct {
		addr string
		size int64
		want string
	}{
		{"a", 100, ""},
		{"a", 100, ""},
		{"a", 100, "address_requests"},
		{"b", 500, ""},
		{"b", 200, "address_bytes"},
		{"c", 100, ""},
		{"d", 100, "in_flight_requests"},
	}
	for i, st := range steps {
		if got := l.acquire(st.addr, st.size); got != st.want {
			t.Fatalf("step %d: acquire(%s, %d) = %q, want %q", i, st.addr, st.size, got, st.want)
		}
	}
	for _, r := range []struct {
		addr string
		size int64
	}{{"a", 100}, {"a", 100}, {"b", 500}, {"c", 100}} {
		l.release(r.addr, r.size)
	}
	if n, b := l.inFlight(); n != 0 || b != 0 || len(l.byAddr) != 0 {
		t.Errorf("after every release: %d requests, %d bytes, %d addresses", n, b, len(l.byAddr))
	}
}

// TestSystemBodyLimit: a keepalive or registration reads at most
// maxSystemBody, before it knows its sender, so that a client without
// credentials cannot hold MaxBodyBytes of the in-flight budget with one.
func TestSystemBodyLimit(t *testing.T) {
	_, mux := newHandler(t, Config{}, &fakePub{})
	d := device{t, mux, "192.0.2.1:40000"}
	big := `{"KeepaliveObject":{"DeviceID":"kk-001","Pad":"` + strings.Repeat("x", maxSystemBody) + `"}}`
	for _, path := range []string{PathKeepalive, PathRegister} {
		rec := d.do(path, big, nil)
		if rec.Code != 400 || !strings.Contains(rec.Body.String(), "body larger than 65536 bytes") {
			t.Errorf("%s with a %d-byte body: HTTP %d %s", path, len(big), rec.Code, rec.Body)
		}
	}
}
