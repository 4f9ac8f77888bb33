package web

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/crypto/bcrypt"

	"citywatch/event"
	"citywatch/internal/chtest"
	"citywatch/internal/kafkaio"
	"citywatch/internal/kafkaio/kafkatest"
	"citywatch/store"
)

// testUsers are the users of the test server; every password is "pw-" +
// name.
var testUsers = []User{
	{Name: "op", Role: RoleOperator},
	{Name: "op-xc", Role: RoleOperator, Districts: []string{"襄城区"}},
	{Name: "pat", Role: RolePatrol, Unit: "unit-001"},
	{Name: "ana", Role: RoleAnalyst},
	{Name: "adm", Role: RoleAdmin},
}

// env is a running web role on a kfake broker and a ClickHouse database
// of its own.
type env struct {
	t       *testing.T
	srv     *Server
	url     string
	kc      kafkaio.Config
	db      *store.DB
	writer  *kafka.Writer
	doc     *apiDoc
	hotlist string

	mu    sync.Mutex
	seen  [][]byte // every body read through a client, for the scans
	stops []func()
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cfg := chtest.Config(t)
	kc := kafkatest.Broker(t, 2)
	ctx := t.Context()
	db, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := kafkaio.EnsureTopics(ctx, kc, kafkaio.AllTopics...); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	users := make([]User, len(testUsers))
	for i, u := range testUsers {
		h, err := bcrypt.GenerateFromPassword([]byte("pw-"+u.Name), minBcryptCost)
		if err != nil {
			t.Fatal(err)
		}
		u.PasswordHash = string(h)
		users[i] = u
	}
	usersFile := filepath.Join(dir, "users.yaml")
	if err := WriteUsers(usersFile, users); err != nil {
		t.Fatal(err)
	}
	hotlist := filepath.Join(dir, "hotlist.csv")
	if err := os.WriteFile(hotlist, []byte("plate,severity\n鄂F12345,high\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := NewApp(Config{Addr: "127.0.0.1:0", UsersFile: usersFile, ClientBuffer: 64}, Deps{
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Kafka: &kc, Store: db, HotlistPath: hotlist,
		Checks: map[string]Check{"kafka": kc.Ping, "clickhouse": db.Ping}, Roles: []string{"web"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(sctx, ln) }()
	w := kc.NewWriter()
	e := &env{t: t, srv: s, url: "http://" + ln.Addr().String(), kc: kc, db: db, writer: w, doc: loadDoc(t), hotlist: hotlist}
	t.Cleanup(func() {
		e.mu.Lock()
		stops := e.stops
		e.mu.Unlock()
		for _, f := range stops {
			f()
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		w.Close()
	})
	return e
}

// publish writes one message to topic (a name without the prefix).
func (e *env) publish(topic, key string, value []byte) {
	e.t.Helper()
	if err := e.writer.WriteMessages(e.t.Context(), kafka.Message{Topic: e.kc.Topic(topic), Key: []byte(key), Value: value}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) publishAlert(a event.Alert) { e.publish(kafkaio.TopicAlerts, a.ID, a.AppendJSON(nil)) }
func (e *env) publishDispatch(d event.Dispatch) {
	e.publish(kafkaio.TopicDispatches, d.UnitID, d.AppendJSON(nil))
}

// eventually polls cond until it holds or 20 s pass; it asserts an
// outcome, not a duration.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tclient is one logged-in browser-like session.
type tclient struct {
	e    *env
	name string
	hc   *http.Client
}

func (e *env) login(name string) *tclient {
	e.t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &tclient{e: e, name: name, hc: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	code, _ := c.do("POST", "/api/login", "POST /api/login", map[string]string{"name": name, "password": "pw-" + name})
	if code != 200 {
		e.t.Fatalf("login %s: %d", name, code)
	}
	return c
}

func (e *env) anonymous() *tclient {
	jar, _ := cookiejar.New(nil)
	return &tclient{e: e, hc: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// do sends a request (body JSON-encoded unless it is []byte) and
// validates the answer against the document for pattern.
func (c *tclient) do(method, path, pattern string, body any) (int, []byte) {
	c.e.t.Helper()
	var rd io.Reader
	ct := "application/json"
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ct = bytes.NewReader(b), "text/csv"
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(c.e.t.Context(), method, c.e.url+path, rd)
	if err != nil {
		c.e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		c.e.t.Fatal(err)
	}
	c.e.record(data)
	if pattern != "" {
		if err := validateResponse(c.e.doc, pattern, resp.StatusCode, resp.Header.Get("Content-Type"), data); err != nil {
			c.e.t.Errorf("%s %s as %s: %v\n%s", method, path, c.name, err, data)
		}
	}
	return resp.StatusCode, data
}

// get decodes a 200 answer into v.
func (c *tclient) get(path, pattern string, v any) {
	c.e.t.Helper()
	code, data := c.do("GET", path, pattern, nil)
	if code != 200 {
		c.e.t.Fatalf("GET %s as %s: %d %s", path, c.name, code, data)
	}
	if v != nil {
		if err := json.Unmarshal(data, v); err != nil {
			c.e.t.Fatalf("GET %s: %v", path, err)
		}
	}
}

func (e *env) record(b []byte) {
	e.mu.Lock()
	e.seen = append(e.seen, bytes.Clone(b))
	e.mu.Unlock()
}

// sseEvent is one event of the feed.
type sseEvent struct {
	id, event, data string
}

// feed connects to the live feed and returns its events on a channel.
func (c *tclient) feed(query string, header map[string]string) <-chan sseEvent {
	c.e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", c.e.url+"/api/feed"+query, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		cancel()
		c.e.t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		cancel()
		c.e.t.Fatalf("feed: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ch := make(chan sseEvent, 1000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			c.e.record([]byte(line))
			switch {
			case line == "":
				if ev.event != "" || ev.data != "" {
					ch <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	c.e.mu.Lock()
	c.e.stops = append(c.e.stops, func() { cancel(); resp.Body.Close(); <-done })
	c.e.mu.Unlock()
	return ch
}

// next returns the next event of ch that is not a resync for alert id
// (or any alert when id is empty).
func (e *env) next(ch <-chan sseEvent, id string) sseEvent {
	e.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				e.t.Fatal("feed closed")
			}
			if id == "" || strings.Contains(ev.data, `"id":"`+id+`"`) {
				return ev
			}
		case <-timeout:
			e.t.Fatalf("no feed event for %q", id)
		}
	}
}

var idNumberRE = regexp.MustCompile(`\d{17}[\dX]`)

// scanPersonal fails the test for any body or feed frame holding an
// unmasked ID number or one of the raw names.
func (e *env) scanPersonal(names ...string) {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range e.seen {
		if m := idNumberRE.Find(b); m != nil {
			e.t.Errorf("unmasked ID number %s in %.200s", m, b)
		}
		for _, n := range names {
			if bytes.Contains(b, []byte(n)) {
				e.t.Errorf("raw name %s in %.200s", n, b)
			}
		}
	}
}

// testAlert is an alert in 襄城区 raised at now.
func testAlert(id, rule string, sev event.Severity, now time.Time) event.Alert {
	return event.Alert{ID: id, Rule: rule, Severity: sev, Status: event.AlertFiring, Subject: event.Subject{Kind: "device", ID: "cam-" + id},
		EventTime: now.Add(-time.Second), RaisedAt: now, Lat: 32.0633, Lon: 112.1254, District: "襄城区", CircleID: "circle-01", TierMinutes: 1,
		Evidence: []string{"ev-" + id}, Summary: "摄像头检测到打架斗殴", Details: []event.Detail{{Name: "confidence", Value: 0.93}}}
}

// status returns the status code of a GET of path without reading the
// body (for streams).
func (c *tclient) status(path string) int {
	c.e.t.Helper()
	ctx, cancel := context.WithCancel(c.e.t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", c.e.url+path, nil)
	resp, err := c.hc.Do(req)
	if err != nil {
		c.e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
