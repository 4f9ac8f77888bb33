package web

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/kafka-go"

	"citywatch/event"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/store"
)

// TestRoleMatrix checks who may use which route: every route is tried by
// every role and by nobody, and the answer is allowed (not 401/403/303 to
// the login) exactly when the route's policy admits the role.
func TestRoleMatrix(t *testing.T) {
	e := newEnv(t)
	clients := map[string]*tclient{"": e.anonymous()}
	for _, u := range testUsers {
		if u.Districts == nil {
			clients[string(u.Role)] = e.login(u.Name)
		}
	}
	for _, r := range e.srv.routes {
		method, path := docPath(r.pattern)
		path = strings.ReplaceAll(strings.ReplaceAll(path, "{id}", "nope"), "{path}", "app.css")
		for role, c := range clients {
			if r.pattern == "POST /api/logout" {
				continue // would end the session the other routes use
			}
			body := any(map[string]string{})
			if r.pattern == "POST /api/hotlists" {
				body = []byte("plate\n")
			}
			var code int
			if r.pattern == "GET /api/feed" {
				code = c.status(path) // a stream: only its status
			} else {
				code, _ = c.do(strings.ToUpper(method), path, "", body)
			}
			denied := code == 401 || code == 403 || (code == 303 && r.policy.page && role == "")
			var u *User
			if role != "" {
				u = &User{Role: Role(role)}
			}
			if want := !r.policy.admits(u); denied != want {
				t.Errorf("%s as %q: %d, want denied=%v", r.pattern, role, code, want)
			}
		}
	}
}

func TestAPI(t *testing.T) {
	e := newEnv(t)
	op, opXC, ana, adm, pat := e.login("op"), e.login("op-xc"), e.login("ana"), e.login("adm"), e.login("pat")
	now := time.Now().UTC().Truncate(time.Millisecond)

	// A fresh console: list, then feed from the list's position.
	var list struct {
		FeedSeq uint64     `json:"feed_seq"`
		Alerts  []alertRow `json:"alerts"`
	}
	op.get("/api/alerts", "GET /api/alerts", &list)
	feed := op.feed("?last_event_id="+strconv.FormatUint(list.FeedSeq, 10), nil)

	a1 := testAlert("a1", "camera.violence", event.SeverityCritical, now)
	// An upstream mistake: a raw ID number and name in an alert. The web
	// role must not pass them on.
	a1.Details = append(a1.Details, event.Detail{Name: "note", Value: "buyer 420602199001011234"}, event.Detail{Name: "buyer_name", Value: "张三丰"})
	e.publishAlert(a1)
	ev := e.next(feed, "a1")
	if ev.event != "alert" || ev.id == "" {
		t.Fatalf("feed event = %+v", ev)
	}
	var row alertRow
	if err := json.Unmarshal([]byte(ev.data), &row); err != nil {
		t.Fatal(err)
	}
	if row.Rule != "camera.violence" || row.Severity != "critical" || row.District != "襄城区" {
		t.Errorf("feed row = %+v", row)
	}
	firstID, _ := strconv.ParseUint(ev.id, 10, 64)

	// An alert of another district is not shown to the 襄城区 operator.
	a2 := testAlert("a2", "crowd.gathering", event.SeverityHigh, now)
	a2.District = "樊城区"
	e.publishAlert(a2)
	e.next(feed, "a2")
	op.get("/api/alerts", "GET /api/alerts", &list)
	if ids := rowIDs(list.Alerts); !cmp.Equal(ids, []string{"a1", "a2"}) && !cmp.Equal(ids, []string{"a2", "a1"}) {
		t.Errorf("op sees %v", ids)
	}
	opXC.get("/api/alerts", "GET /api/alerts", &list)
	if ids := rowIDs(list.Alerts); !cmp.Equal(ids, []string{"a1"}) {
		t.Errorf("op-xc sees %v, want [a1]", ids)
	}
	if code, _ := opXC.do("GET", "/api/alerts/a2", "GET /api/alerts/{id}", nil); code != 404 {
		t.Errorf("op-xc GET /api/alerts/a2 = %d, want 404", code)
	}
	op.get("/api/alerts?severity=critical", "GET /api/alerts", &list)
	if ids := rowIDs(list.Alerts); !cmp.Equal(ids, []string{"a1"}) {
		t.Errorf("severity=critical: %v", ids)
	}

	// Resume: a client that saw the first event gets the next ones again.
	resumed := op.feed("", map[string]string{"Last-Event-ID": strconv.FormatUint(firstID, 10)})
	if ev := e.next(resumed, ""); !strings.Contains(ev.data, `"id":"a2"`) {
		t.Errorf("resumed feed starts with %+v, want a2", ev)
	}
	// A Last-Event-ID from before the ring (another run) gets a resync.
	old := op.feed("", map[string]string{"Last-Event-ID": "1"})
	if ev := e.next(old, ""); ev.event != "resync" {
		t.Errorf("old Last-Event-ID: first event %+v, want resync", ev)
	}

	// Actions: claim, ack, close; each audited and shown on the feed.
	for _, act := range []struct {
		path string
		body any
	}{
		{"/api/alerts/a1/claim", nil},
		{"/api/alerts/a1/ack", nil},
		{"/api/alerts/a2/close", map[string]string{"outcome": "false_alarm", "note": "误报：演练"}},
	} {
		pattern := "POST /api/alerts/{id}/" + act.path[strings.LastIndex(act.path, "/")+1:]
		if code, data := op.do("POST", act.path, pattern, act.body); code != 200 {
			t.Fatalf("POST %s: %d %s", act.path, code, data)
		}
	}
	if code, _ := op.do("POST", "/api/alerts/a1/close", "POST /api/alerts/{id}/close", map[string]string{"outcome": "maybe"}); code != 400 {
		t.Errorf("close with a bad outcome: %d, want 400", code)
	}
	if code, _ := ana.do("POST", "/api/alerts/a1/ack", "POST /api/alerts/{id}/ack", nil); code != 403 {
		t.Errorf("analyst ack: %d, want 403", code)
	}
	ev = e.next(feed, "a1")
	for !strings.Contains(ev.data, `"acked_by":"op"`) {
		ev = e.next(feed, "a1")
	}
	audit, err := e.db.AuditSince(t.Context(), now.Add(-time.Minute), 100, "alert.claim", "alert.ack", store.AuditClose)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range audit {
		got = append(got, a.Who+" "+a.Action+" "+a.Object)
	}
	if diff := cmp.Diff([]string{"op alert.claim a1", "op alert.ack a1", "op alert.close a2"}, got); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}

	// Dispatch by hand: an assigned message on citywatch.dispatches.
	code, data := op.do("POST", "/api/alerts/a1/dispatch", "POST /api/alerts/{id}/dispatch", map[string]string{"unit_id": "unit-002"})
	if code != 200 {
		t.Fatalf("dispatch: %d %s", code, data)
	}
	d := readTopic(t, e.kc, kafkaio.TopicDispatches, func(m kafka.Message) bool { return string(m.Key) == "unit-002" })
	dd, err := event.DecodeDispatch(d.Value)
	if err != nil || dd.AlertID != "a1" || dd.Status != event.DispatchAssigned || dd.CircleID != "circle-01" {
		t.Errorf("dispatch message = %+v, %v", dd, err)
	}

	// The dispatcher assigns unit-001; the patrol user sees it and accepts.
	e.publishDispatch(event.Dispatch{ID: "d1", AlertID: "a1", UnitID: "unit-001", Status: event.DispatchAssigned, Time: now, ETASeconds: 45, DistanceM: 500, CircleID: "circle-01", TierMinutes: 1})
	var pv patrolView
	e.eventually("the patrol's dispatch", func() bool {
		pat.get("/api/patrol/current", "GET /api/patrol/current", &pv)
		return pv.Dispatch != nil && pv.Dispatch.ID == "d1"
	})
	if pv.Alert == nil || pv.Alert.Summary != a1.Summary || pv.Alert.Covert {
		t.Errorf("patrol alert = %+v", pv.Alert)
	}
	if code, data := pat.do("POST", "/api/patrol/status", "POST /api/patrol/status", map[string]string{"dispatch_id": "d1", "status": "accepted"}); code != 200 {
		t.Fatalf("patrol status: %d %s", code, data)
	}
	if code, _ := pat.do("POST", "/api/patrol/status", "POST /api/patrol/status", map[string]string{"dispatch_id": "other", "status": "accepted"}); code != 409 {
		t.Errorf("status for another dispatch: %d, want 409", code)
	}
	m := readTopic(t, e.kc, kafkaio.TopicPatrol, func(m kafka.Message) bool { return strings.Contains(string(m.Value), "patrol.status") })
	var dec event.Decoder
	var pe event.Event
	if err := dec.Decode(m.Value, &pe); err != nil || string(m.Key) != "unit-001" || pe.DispatchID != "d1" || pe.Status != "accepted" || pe.DeviceID != "unit-001" {
		t.Errorf("patrol.status = %s (%v)", m.Value, err)
	}
	if code, _ := pat.do("POST", "/api/patrol/position", "POST /api/patrol/position", map[string]any{"lat": 32.06, "lon": 112.12, "status": "busy", "speed_kmh": 30}); code != 200 {
		t.Errorf("patrol position: %d", code)
	}

	// A covert hit hides its reason from the patrol.
	a3 := testAlert("a3", "vehicle.hotlist", event.SeverityHigh, now)
	a3.Summary = "布控车辆 鄂F12345 经过：涉嫌走私"
	a3.Details = []event.Detail{{Name: "covert", Value: true}, {Name: "reason", Value: "涉嫌走私"}}
	e.publishAlert(a3)
	e.next(feed, "a3")
	e.publishDispatch(event.Dispatch{ID: "d3", AlertID: "a3", UnitID: "unit-001", Status: event.DispatchAssigned, Time: now.Add(time.Second), CircleID: "circle-01", TierMinutes: 1})
	e.eventually("the covert dispatch", func() bool {
		pv = patrolView{}
		pat.get("/api/patrol/current", "GET /api/patrol/current", &pv)
		return pv.Dispatch != nil && pv.Dispatch.ID == "d3"
	})
	_, raw := pat.do("GET", "/api/patrol/current", "GET /api/patrol/current", nil)
	if !pv.Alert.Covert || strings.Contains(string(raw), "走私") || strings.Contains(string(raw), "hotlist") {
		t.Errorf("covert hit shown to patrol: %s", raw)
	}

	// Detail: messages, dispatches, timeline, ranked units.
	var det alertDetailView
	e.eventually("a1's dispatch in its detail", func() bool {
		op.get("/api/alerts/a1", "GET /api/alerts/{id}", &det)
		return len(det.Alert.Dispatches) >= 1
	})
	if len(det.Messages) != 1 || len(det.Units) == 0 || len(det.Timeline) < 3 {
		t.Errorf("detail = %+v", det)
	}

	// Mute a rule for a device: the list hides the alert.
	if code, data := op.do("POST", "/api/mutes", "POST /api/mutes", map[string]any{"rule": "crowd.gathering", "device": "cam-a2", "minutes": 30, "reason": "施工"}); code != 200 {
		t.Fatalf("mute: %d %s", code, data)
	}
	op.get("/api/alerts", "GET /api/alerts", &list)
	for _, r := range list.Alerts {
		if r.ID == "a2" {
			t.Error("muted alert a2 listed")
		}
	}
	op.get("/api/alerts?muted=1", "GET /api/alerts", &list)
	if !containsID(list.Alerts, "a2") {
		t.Error("muted=1 does not list a2")
	}

	// Unmask: admin only, with a reason; returns only what exists.
	a4 := testAlert("a4", "fuel.bulk_repeat", event.SeverityHigh, now)
	a4.Subject = event.Subject{Kind: event.SubjectPerson, ID: "p-5e1f00aa"}
	a4.Details = []event.Detail{{Name: "buyer_id_masked", Value: event.MaskIDNumber("420602199001011234")}, {Name: "buyer_name_masked", Value: event.MaskName("张三丰")}}
	e.publishAlert(a4)
	e.next(feed, "a4")
	if code, _ := op.do("POST", "/api/alerts/a4/unmask", "POST /api/alerts/{id}/unmask", map[string]string{"reason": "案件侦查需要核实身份"}); code != 403 {
		t.Errorf("operator unmask: %d, want 403", code)
	}
	if code, _ := adm.do("POST", "/api/alerts/a4/unmask", "POST /api/alerts/{id}/unmask", map[string]string{"reason": ""}); code != 400 {
		t.Errorf("unmask without reason: %d, want 400", code)
	}
	var um unmaskView
	code, data = adm.do("POST", "/api/alerts/a4/unmask", "POST /api/alerts/{id}/unmask", map[string]string{"reason": "案件侦查需要核实身份"})
	if err := json.Unmarshal(data, &um); code != 200 || err != nil || um.Pseudonym != "p-5e1f00aa" || um.BuyerIDMasked != "420602********1234" {
		t.Errorf("unmask: %d %s", code, data)
	}

	// Hotlist upload: checked, then written for the rules role.
	if code, _ := adm.do("POST", "/api/hotlists", "POST /api/hotlists", []byte("plate,severity\nnot a plate,high\n")); code != 400 {
		t.Errorf("bad hotlist: %d, want 400", code)
	}
	if code, data := adm.do("POST", "/api/hotlists", "POST /api/hotlists", []byte("plate,severity,covert\n鄂F54321,critical,true\n")); code != 200 {
		t.Errorf("hotlist: %d %s", code, data)
	}
	if b, _ := os.ReadFile(e.hotlist); !strings.Contains(string(b), "鄂F54321") {
		t.Errorf("hotlist file = %s", b)
	}

	// The rest of the read API answers and matches the document.
	for _, p := range [][2]string{
		{"/api/units", "GET /api/units"}, {"/api/circles", "GET /api/circles"}, {"/api/dispatches", "GET /api/dispatches"},
		{"/api/devices", "GET /api/devices"}, {"/api/devices?kind=checkpoint", "GET /api/devices"}, {"/api/devices?layer=density", "GET /api/devices"},
		{"/api/city/districts", "GET /api/city/districts"}, {"/api/health", "GET /api/health"}, {"/api/mutes", "GET /api/mutes"}, {"/api/me", "GET /api/me"},
	} {
		op.get(p[0], p[1], nil)
	}
	var units struct{ Units []unitView }
	op.get("/api/units", "GET /api/units", &units)
	if want := len(e.srv.city.DevicesOf(city.KindUnit)); len(units.Units) != want {
		t.Errorf("%d units, want %d", len(units.Units), want)
	}

	// Trends from ClickHouse (the alerts and dispatches tables are the
	// sink's; here only the audit rows exist).
	for _, k := range []string{"alerts", "events", "response", "outcomes", "health"} {
		ana.get("/api/trends/"+k, "GET /api/trends/"+k, nil)
	}
	var outcomes table
	ana.get("/api/trends/outcomes", "GET /api/trends/outcomes", &outcomes)
	if len(outcomes.Rows) != 1 || outcomes.Rows[0][0] != "crowd.gathering" || outcomes.Rows[0][3] != float64(1) {
		t.Errorf("outcomes = %+v", outcomes)
	}
	code, data = ana.do("GET", "/api/trends/outcomes?format=xlsx", "GET /api/trends/outcomes", nil)
	if code != 200 || string(data[:2]) != "PK" {
		t.Errorf("xlsx: %d %.20q", code, data)
	}
	code, data = ana.do("GET", "/api/trends/outcomes?format=csv", "GET /api/trends/outcomes", nil)
	if code != 200 || !strings.Contains(string(data), "rule,closed,confirmed,false_alarm,duplicate,false_alarm_rate") {
		t.Errorf("csv: %d %s", code, data)
	}

	// Cross-origin writes are refused.
	req, _ := http.NewRequestWithContext(t.Context(), "POST", e.url+"/api/alerts/a1/ack", nil)
	req.Header.Set("Origin", "http://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := op.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Errorf("cross-origin ack: %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}

	e.scanPersonal("张三丰")
}

func rowIDs(rows []alertRow) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r.ID)
	}
	return out
}

func containsID(rows []alertRow, id string) bool {
	for _, r := range rows {
		if r.ID == id {
			return true
		}
	}
	return false
}

// readTopic returns the first message of topic (every partition, from the
// start) for which keep is true.
func readTopic(t *testing.T, kc kafkaio.Config, topic string, keep func(kafka.Message) bool) kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	found := make(chan kafka.Message, 1)
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() {
		defer close(done)
		_ = tailTopic(ctx, kc, kc.Topic(topic), time.Unix(0, 0), func(m *kafka.Message) {
			if keep(*m) {
				select {
				case found <- *m:
				default:
				}
				cancel()
			}
		})
	}()
	select {
	case m := <-found:
		return m
	case <-ctx.Done():
		select {
		case m := <-found:
			return m
		default:
		}
		t.Fatalf("no matching message on %s", topic)
	}
	return kafka.Message{}
}

func TestTrendRangeToTheMinute(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 17, 42, 0, time.UTC)
	s := &Server{loc: time.UTC, now: func() time.Time { return now }}
	for _, tc := range []struct {
		query    string
		from, to time.Time
		err      bool
	}{
		{"", now.Truncate(time.Hour).Add(-23 * time.Hour), now.Truncate(time.Hour).Add(time.Hour), false},
		{"from=2026-11-25T08:16:30Z&to=2026-11-26T09:40:01Z", time.Date(2026, 11, 25, 8, 16, 0, 0, time.UTC), time.Date(2026, 11, 26, 9, 41, 0, 0, time.UTC), false},
		{"from=2026-11-25T08:16:00Z&to=2026-11-26T09:40:00Z", time.Date(2026, 11, 25, 8, 16, 0, 0, time.UTC), time.Date(2026, 11, 26, 9, 40, 0, 0, time.UTC), false},
		{"from=2026-11-25T08:16:10Z&to=2026-11-25T08:16:50Z", time.Date(2026, 11, 25, 8, 16, 0, 0, time.UTC), time.Date(2026, 11, 25, 8, 17, 0, 0, time.UTC), false},
		{"from=2026-11-25T08:16:10Z&to=2026-11-25T08:16:10Z", time.Time{}, time.Time{}, true},
	} {
		r := httptest.NewRequest("GET", "/api/trends/events?"+tc.query, nil)
		q, err := s.trendQuery(r)
		if (err != nil) != tc.err {
			t.Errorf("%q: error %v, want error %v", tc.query, err, tc.err)
			continue
		}
		if !tc.err && (!q.From.Equal(tc.from) || !q.To.Equal(tc.to)) {
			t.Errorf("%q: range %v – %v, want %v – %v", tc.query, q.From, q.To, tc.from, tc.to)
		}
	}
}
