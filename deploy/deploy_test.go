package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"citywatch/dispatch"
	"citywatch/ingest"
	"citywatch/ingest/gateway"
	"citywatch/internal/city"
	"citywatch/internal/kafkaio"
	"citywatch/internal/memlimit"
	"citywatch/rules"
	"citywatch/store"
	"citywatch/web"
)

// The tests run in deploy/; the repository is one up.
const root = ".."

// config mirrors the Config of cmd/citywatch/config.go (package main
// cannot be imported); TestConfigMirror keeps the two in step.
type config struct {
	Kafka      kafkaio.Config   `yaml:"kafka"`
	ClickHouse store.Config     `yaml:"clickhouse"`
	Ingest     ingest.Config    `yaml:"ingest"`
	Sink       store.SinkConfig `yaml:"sink"`
	Rules      rules.RoleConfig `yaml:"rules"`
	Dispatch   dispatch.Config  `yaml:"dispatch"`
	HTTP       web.Config       `yaml:"http"`
	Gateway    gateway.Config   `yaml:"gateway"`
	Runtime    memlimit.Config  `yaml:"runtime"`
	Timezone   string           `yaml:"timezone"`
	LogLevel   string           `yaml:"log_level"`
	Hotlist    string           `yaml:"hotlist"`
	Watchlist  string           `yaml:"watchlist"`
}

func (c *config) setDefaults() {
	c.Kafka.SetDefaults()
	c.ClickHouse.SetDefaults()
	c.Ingest.SetDefaults()
	c.Sink.SetDefaults()
	c.Rules.SetDefaults()
	c.Dispatch.SetDefaults()
	c.HTTP.SetDefaults()
	c.Gateway.SetDefaults()
	c.Runtime.SetDefaults()
}

// loadConfig decodes a citywatch YAML file as the binary does: unknown
// fields rejected, then defaults.
func loadConfig(t *testing.T, path string) config {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("%s: %v", path, err)
	}
	c.setDefaults()
	for name, v := range map[string]interface{ Validate() error }{
		"ingest": c.Ingest, "sink": c.Sink, "rules": c.Rules, "dispatch": c.Dispatch, "http": c.HTTP, "gateway": c.Gateway, "runtime": c.Runtime,
	} {
		if err := v.Validate(); err != nil {
			t.Errorf("%s: section %s: %v", path, name, err)
		}
	}
	return c
}

func TestConfigMirror(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(root, "cmd/citywatch/config.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok || ts.Name.Name != "Config" {
			return true
		}
		for _, fld := range ts.Type.(*ast.StructType).Fields.List {
			if fld.Tag == nil {
				continue
			}
			tag, _ := strconv.Unquote(fld.Tag.Value)
			if y := reflect.StructTag(tag).Get("yaml"); y != "" && y != "-" {
				want = append(want, y)
			}
		}
		return false
	})
	var got []string
	rt := reflect.TypeFor[config]()
	for i := range rt.NumField() {
		got = append(got, rt.Field(i).Tag.Get("yaml"))
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("the test's config sections %v differ from cmd/citywatch Config %v", got, want)
	}
}

// deployFiles returns the files under the deploy folders checked here.
func deployFiles(t *testing.T, exts ...string) []string {
	t.Helper()
	var out []string
	for _, dir := range []string{"compose", "kubernetes", "prometheus", "grafana"} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && path != dir && strings.HasPrefix(d.Name(), ".") || d.Name() == "secrets" && d.IsDir() {
				return filepath.SkipDir
			}
			if !d.IsDir() && (len(exts) == 0 || slices.Contains(exts, filepath.Ext(path))) {
				out = append(out, path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// yamlDocs decodes every document of a YAML file.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

func TestYAMLParses(t *testing.T) {
	files := deployFiles(t, ".yaml", ".yml")
	if len(files) < 10 {
		t.Fatalf("only %d YAML files found: %v", len(files), files)
	}
	for _, f := range files {
		if len(yamlDocs(t, f)) == 0 {
			t.Errorf("%s: no YAML document", f)
		}
	}
}

func TestCitywatchConfigs(t *testing.T) {
	for _, f := range []string{"compose/citywatch.yaml", "compose/citywatch-web.yaml",
		"kubernetes/config/citywatch.yaml", "kubernetes/config/citywatch-web.yaml", "citywatch.example.yaml"} {
		loadConfig(t, f)
	}
}

// --- what the code defines ------------------------------------------------

type code struct {
	metrics  map[string]bool            // metric names in string literals of non-test .go files
	env      map[string]bool            // CITYWATCH_* read in cmd/citywatch/config.go
	commands map[string]string          // subcommand → file that defines its function
	roles    []string                   // knownRoles ∩ builtRoles
	flags    map[string]map[string]bool // file → flag names defined in it
}

func readCode(t *testing.T) code {
	t.Helper()
	c := code{metrics: map[string]bool{}, env: map[string]bool{}, commands: map[string]string{}, flags: map[string]map[string]bool{}}
	metricRE := regexp.MustCompile(`"(citywatch_[a-z0-9_]+)"`)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "bin" || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range metricRE.FindAllSubmatch(b, -1) {
			c.metrics[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cmdDir := filepath.Join(root, "cmd/citywatch")
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(cmdDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, m := range regexp.MustCompile(`"(CITYWATCH_[A-Z0-9_]+)"`).FindAllStringSubmatch(read("config.go"), -1) {
		c.env[m[1]] = true
	}
	files, _ := filepath.Glob(filepath.Join(cmdDir, "*.go"))
	funcFile := map[string]string{}
	flagRE := regexp.MustCompile(`fs\.\w+\(\s*"([a-z][a-z0-9-]*)"|fs\.\w+Var\([^,]+,\s*"([a-z][a-z0-9-]*)"`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, _ := os.ReadFile(f)
		for _, m := range regexp.MustCompile(`(?m)^func (cmd\w+)\(`).FindAllStringSubmatch(string(b), -1) {
			funcFile[m[1]] = filepath.Base(f)
		}
		fl := map[string]bool{}
		for _, m := range flagRE.FindAllStringSubmatch(string(b), -1) {
			fl[m[1]+m[2]] = true
		}
		c.flags[filepath.Base(f)] = fl
	}
	for _, m := range regexp.MustCompile(`\{"([a-z]+)", "[^"]*", "[^"]*", (\w+)\}`).FindAllStringSubmatch(read("main.go"), -1) {
		if m[2] != "nil" {
			c.commands[m[1]] = funcFile[m[2]]
		}
	}
	if len(c.commands) < 5 {
		t.Fatalf("found only the subcommands %v in cmd/citywatch/main.go", c.commands)
	}
	run := read("run.go")
	list := func(name string) []string {
		m := regexp.MustCompile(`var ` + name + ` = \[\]string\{([^}]*)\}`).FindStringSubmatch(run)
		if m == nil {
			t.Fatalf("no %s in cmd/citywatch/run.go", name)
		}
		var out []string
		for _, s := range strings.Split(m[1], ",") {
			if s = strings.Trim(strings.TrimSpace(s), `"`); s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	built := list("builtRoles")
	for _, r := range list("knownRoles") {
		if slices.Contains(built, r) {
			c.roles = append(c.roles, r)
		}
	}
	return c
}

// --- metric names ------------------------------------------------------------

func TestMetricNamesExist(t *testing.T) {
	c := readCode(t)
	re := regexp.MustCompile(`citywatch_[a-z0-9_]+`)
	files := append([]string{"prometheus/alerts.yml"}, deployFiles(t, ".json")...)
	seen := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range re.FindAllString(string(b), -1) {
			seen++
			if c.metrics[name] {
				continue
			}
			base := name
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				base = strings.TrimSuffix(base, suf)
			}
			if base == name || !c.metrics[base] {
				t.Errorf("%s: metric %s is not defined in the Go code", f, name)
			}
		}
	}
	if seen < 20 {
		t.Errorf("only %d metric references found", seen)
	}
}

func TestGrafanaDashboard(t *testing.T) {
	var uids []string
	for _, d := range yamlDocs(t, "grafana/provisioning/datasources/prometheus.yaml") {
		for _, ds := range d["datasources"].([]any) {
			uids = append(uids, ds.(map[string]any)["uid"].(string))
		}
	}
	files := deployFiles(t, ".json")
	if len(files) == 0 {
		t.Fatal("no dashboard")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var dash struct {
			UID    string `json:"uid"`
			Panels []struct {
				ID         int    `json:"id"`
				Type       string `json:"type"`
				Title      string `json:"title"`
				Datasource *struct {
					UID string `json:"uid"`
				} `json:"datasource"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(b, &dash); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		ids := map[int]bool{}
		for _, p := range dash.Panels {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d twice", f, p.ID)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || !slices.Contains(uids, p.Datasource.UID) {
				t.Errorf("%s: panel %q does not use a provisioned datasource %v", f, p.Title, uids)
			}
			if len(p.Targets) == 0 || p.Targets[0].Expr == "" {
				t.Errorf("%s: panel %q has no query", f, p.Title)
			}
		}
	}
}

// --- Prometheus rules ------------------------------------------------------

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func TestAlertRules(t *testing.T) {
	b, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" {
				t.Errorf("group %s: a rule without alert name or expr", g.Name)
			}
			if strings.TrimSpace(r.Annotations["summary"]) == "" {
				t.Errorf("alert %s has no summary annotation", r.Alert)
			}
		}
	}
	if n == 0 {
		t.Fatal("no alerting rules")
	}
	// The unowned-shards alert names rules.shards of the deployments.
	m := regexp.MustCompile(`citywatch_rules_shards_owned\) < (\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no alert on citywatch_rules_shards_owned")
	}
	for _, f := range []string{"compose/citywatch.yaml", "kubernetes/config/citywatch.yaml"} {
		if got, want := string(m[1]), strconv.Itoa(loadConfig(t, f).Rules.Shards); got != want {
			t.Errorf("alerts.yml counts %s rules shards, %s has rules.shards %s", got, f, want)
		}
	}
}

// --- environment variables --------------------------------------------------

func TestEnvironmentVariablesAreRead(t *testing.T) {
	c := readCode(t)
	re := regexp.MustCompile(`CITYWATCH_[A-Z0-9_]+`)
	seen := map[string]bool{}
	for _, f := range deployFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range re.FindAllString(string(b), -1) {
			seen[v] = true
			if !c.env[v] {
				t.Errorf("%s: %s is not read by cmd/citywatch/config.go", f, v)
			}
		}
	}
	for _, v := range []string{"CITYWATCH_KAFKA_BROKERS", "CITYWATCH_PSEUDONYM_KEY", "CITYWATCH_CONFIG", "CITYWATCH_CLICKHOUSE_ADDR"} {
		if !seen[v] {
			t.Errorf("%s is used nowhere in the deployments", v)
		}
	}
}

// --- citywatch invocations: commands, roles, flags, ports -------------------

// invocation is one citywatch process of a deployment.
type invocation struct {
	where  string // file and service or Deployment
	name   string // compose service or Deployment/Job name
	args   []string
	env    map[string]string
	config string // path of its YAML configuration, relative to deploy/
	ports  []int  // container ports it is said to listen on
	// replicas is the number of processes (compose deploy.replicas or
	// Deployment spec.replicas).
	replicas int
}

func (in invocation) subcommand() string { return in.args[0] }

// flag returns the value of --name (or -name) and whether it is there.
func (in invocation) flag(name string) (string, bool) {
	for i, a := range in.args[1:] {
		k, v, hasV := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || k != name {
			continue
		}
		if hasV {
			return v, true
		}
		if i+2 < len(in.args) {
			return in.args[i+2], true
		}
		return "", true
	}
	return "", false
}

func (in invocation) roles() []string {
	v, _ := in.flag("roles")
	return strings.Split(v, ",")
}

// listens returns the ports the process opens, from the code's defaults,
// its configuration file and the environment beside it.
func (in invocation) listens(t *testing.T) map[int]string {
	t.Helper()
	cfg := loadConfig(t, in.config)
	if v := in.env["CITYWATCH_HTTP_ADDR"]; v != "" {
		cfg.HTTP.Addr = v
	}
	out := map[int]string{}
	add := func(addr, what string) {
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("%s: %s %q: %v", in.where, what, addr, err)
		}
		n, _ := strconv.Atoi(p)
		out[n] = what
	}
	switch in.subcommand() {
	case "gateway":
		add(cfg.Gateway.HTTPAddr, "gateway.http_addr")
		add(cfg.Gateway.RTP.Addr, "gateway.rtp.addr")
	case "run":
		// Every `citywatch run` process serves http.addr: the web role's
		// UI and API, or without it only /metrics and the probes.
		add(cfg.HTTP.Addr, "http.addr")
	}
	return out
}

func strs(v any) []string {
	var out []string
	switch v := v.(type) {
	case []any:
		for _, s := range v {
			out = append(out, toString(s))
		}
	case string:
		out = strings.Fields(v)
	}
	return out
}

func toString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int:
		return strconv.Itoa(v)
	case bool:
		return strconv.FormatBool(v)
	case nil:
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func envOf(v any) map[string]string {
	out := map[string]string{}
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			out[k] = toString(x)
		}
	case []any:
		for _, x := range v {
			k, val, _ := strings.Cut(toString(x), "=")
			out[k] = val
		}
	}
	return out
}

// composeFile is deploy/compose/compose.yaml, decoded.
func composeFile(t *testing.T) map[string]any {
	t.Helper()
	docs := yamlDocs(t, "compose/compose.yaml")
	if len(docs) != 1 {
		t.Fatalf("compose.yaml: %d documents", len(docs))
	}
	return docs[0]
}

func composeInvocations(t *testing.T) []invocation {
	t.Helper()
	doc := composeFile(t)
	configs := mapOf(doc["configs"])
	var out []invocation
	for name, sv := range mapOf(doc["services"]) {
		s := mapOf(sv)
		if img := toString(s["image"]); !strings.HasPrefix(img, "citywatch") {
			continue
		}
		in := invocation{where: "compose/compose.yaml service " + name, name: name, args: strs(s["command"]), env: envOf(s["environment"]), replicas: 1}
		if r, ok := mapOf(s["deploy"])["replicas"].(int); ok {
			in.replicas = r
		}
		for _, c := range s["configs"].([]any) {
			cm := mapOf(c)
			if toString(cm["target"]) == in.env["CITYWATCH_CONFIG"] {
				in.config = filepath.Join("compose", toString(mapOf(configs[toString(cm["source"])])["file"]))
			}
		}
		if in.config == "" {
			t.Fatalf("%s: no config file mounted at CITYWATCH_CONFIG %q", in.where, in.env["CITYWATCH_CONFIG"])
		}
		for _, p := range strs(s["ports"]) {
			p, _, _ = strings.Cut(p, "/")
			parts := strings.Split(p, ":")
			n, err := strconv.Atoi(parts[len(parts)-1])
			if err != nil {
				t.Fatalf("%s: port %q", in.where, p)
			}
			in.ports = append(in.ports, n)
		}
		if hc := mapOf(s["healthcheck"]); hc != nil {
			for _, m := range regexp.MustCompile(`localhost:(\d+)`).FindAllStringSubmatch(strings.Join(strs(hc["test"]), " "), -1) {
				n, _ := strconv.Atoi(m[1])
				in.ports = append(in.ports, n)
			}
		}
		if len(in.args) == 0 {
			t.Fatalf("%s: no command", in.where)
		}
		out = append(out, in)
	}
	return out
}

// k8sObjects are the manifests kustomization.yaml lists.
func k8sObjects(t *testing.T) (objs []map[string]any, kust map[string]any) {
	t.Helper()
	kust = yamlDocs(t, "kubernetes/kustomization.yaml")[0]
	for _, r := range strs(kust["resources"]) {
		objs = append(objs, yamlDocs(t, filepath.Join("kubernetes", r))...)
	}
	return objs, kust
}

// k8sEnv is the ConfigMap citywatch-env of kustomization.yaml.
func k8sEnv(t *testing.T, kust map[string]any) map[string]string {
	t.Helper()
	for _, g := range kust["configMapGenerator"].([]any) {
		if gm := mapOf(g); gm["name"] == "citywatch-env" {
			return envOf(gm["literals"])
		}
	}
	t.Fatal("kustomization.yaml: no ConfigMap citywatch-env")
	return nil
}

type k8sContainer struct {
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	StartupProbe   *probe `yaml:"startupProbe"`
}

type probe struct {
	HTTPGet   *struct{ Port any } `yaml:"httpGet"`
	TCPSocket *struct{ Port any } `yaml:"tcpSocket"`
}

type k8sWorkload struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Replicas *int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec struct {
				Containers []k8sContainer `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func convert[T any](t *testing.T, v any) T {
	t.Helper()
	var out T
	b, err := yaml.Marshal(v)
	if err == nil {
		err = yaml.Unmarshal(b, &out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func k8sWorkloads(t *testing.T) []k8sWorkload {
	objs, _ := k8sObjects(t)
	var out []k8sWorkload
	for _, o := range objs {
		if k := o["kind"]; k == "Deployment" || k == "Job" {
			out = append(out, convert[k8sWorkload](t, o))
		}
	}
	return out
}

func k8sInvocations(t *testing.T) []invocation {
	t.Helper()
	_, kust := k8sObjects(t)
	base := k8sEnv(t, kust)
	var out []invocation
	for _, w := range k8sWorkloads(t) {
		for _, c := range w.Spec.Template.Spec.Containers {
			if c.Image != "citywatch" {
				continue
			}
			in := invocation{where: "kubernetes " + w.Kind + " " + w.Metadata.Name, name: w.Metadata.Name, args: c.Args, env: map[string]string{}, replicas: 1}
			if w.Spec.Replicas != nil {
				in.replicas = *w.Spec.Replicas
			}
			for k, v := range base {
				in.env[k] = v
			}
			for _, e := range c.Env {
				in.env[e.Name] = e.Value
			}
			const mount = "/etc/citywatch/config/"
			if p := in.env["CITYWATCH_CONFIG"]; strings.HasPrefix(p, mount) {
				in.config = filepath.Join("kubernetes/config", strings.TrimPrefix(p, mount))
			} else {
				t.Fatalf("%s: CITYWATCH_CONFIG %q is not in the config ConfigMap's mount", in.where, p)
			}
			for _, p := range c.Ports {
				in.ports = append(in.ports, p.ContainerPort)
			}
			if a := w.Spec.Template.Metadata.Annotations["prometheus.io/port"]; a != "" {
				n, _ := strconv.Atoi(a)
				in.ports = append(in.ports, n)
			}
			if len(in.args) == 0 {
				t.Fatalf("%s: no args", in.where)
			}
			out = append(out, in)
		}
	}
	return out
}

func TestCommandsRolesFlags(t *testing.T) {
	c := readCode(t)
	all := append(composeInvocations(t), k8sInvocations(t)...)
	if len(all) < 12 {
		t.Fatalf("only %d citywatch processes found", len(all))
	}
	for _, in := range all {
		file, ok := c.commands[in.subcommand()]
		if !ok {
			t.Errorf("%s: citywatch %s is not a subcommand (%v)", in.where, in.subcommand(), c.commands)
			continue
		}
		for _, a := range in.args[1:] {
			if !strings.HasPrefix(a, "-") {
				continue
			}
			k, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if !c.flags[file][k] {
				t.Errorf("%s: citywatch %s has no flag --%s", in.where, in.subcommand(), k)
			}
		}
		if in.subcommand() == "run" {
			for _, r := range in.roles() {
				if !slices.Contains(c.roles, r) {
					t.Errorf("%s: role %q is not one of %v", in.where, r, c.roles)
				}
			}
		}
	}
}

func TestPorts(t *testing.T) {
	all := append(composeInvocations(t), k8sInvocations(t)...)
	byName := map[string]map[int]string{}
	for _, in := range all {
		listens := in.listens(t)
		byName[in.name] = listens
		for _, p := range in.ports {
			if _, ok := listens[p]; !ok {
				t.Errorf("%s: port %d is not one it listens on %v (defaults, %s, environment)", in.where, p, listens, in.config)
			}
		}
	}
	// The simulators reach the gateway on its ports.
	sims := 0
	for _, in := range composeInvocations(t) {
		if _, ok := in.flag("gateway-rtp"); in.subcommand() != "sim" || !ok {
			continue
		}
		sims++
		for flag, want := range map[string]string{"gateway-rtp": "gateway.rtp.addr", "gateway-viid": "gateway.http_addr"} {
			v, ok := in.flag(flag)
			if !ok {
				t.Errorf("%s: no --%s", in.where, flag)
				continue
			}
			if u, err := url.Parse(v); err == nil && u.Host != "" {
				v = u.Host
			}
			host, port, err := net.SplitHostPort(v)
			if err != nil {
				t.Fatalf("%s: --%s %q: %v", in.where, flag, v, err)
			}
			n, _ := strconv.Atoi(port)
			if byName[host][n] != want {
				t.Errorf("%s: --%s %s: service %s does not listen there for %s (%v)", in.where, flag, v, host, want, byName[host])
			}
		}
	}
	if sims == 0 {
		t.Error("no compose simulator sends through the gateway")
	}
	// Prometheus scrapes each service on a port it serves /metrics on.
	type promConfig struct {
		ScrapeConfigs []struct {
			JobName      string `yaml:"job_name"`
			DNSSDConfigs []struct {
				Names []string `yaml:"names"`
				Port  int      `yaml:"port"`
			} `yaml:"dns_sd_configs"`
		} `yaml:"scrape_configs"`
	}
	prom := convert[promConfig](t, yamlDocs(t, "prometheus/prometheus.yml")[0])
	scraped := map[string]bool{}
	for _, sc := range prom.ScrapeConfigs {
		for _, d := range sc.DNSSDConfigs {
			for _, n := range d.Names {
				scraped[n] = true
				if w := byName[n][d.Port]; w != "http.addr" && w != "gateway.http_addr" {
					t.Errorf("prometheus.yml: %s:%d serves no /metrics (%v)", n, d.Port, byName[n])
				}
			}
		}
	}
	for _, in := range composeInvocations(t) {
		if len(in.listens(t)) > 0 && !scraped[in.name] {
			t.Errorf("prometheus.yml does not scrape the compose service %s", in.name)
		}
	}
}

// TestKubernetesProbesAndServices: probes and Service target ports name
// ports of the pods they point at.
func TestKubernetesProbesAndServices(t *testing.T) {
	objs, kust := k8sObjects(t)
	type pod struct {
		labels map[string]string
		ports  map[string]bool // names and numbers
	}
	var pods []pod
	for _, w := range k8sWorkloads(t) {
		p := pod{labels: w.Spec.Template.Metadata.Labels, ports: map[string]bool{}}
		for _, c := range w.Spec.Template.Spec.Containers {
			for _, cp := range c.Ports {
				p.ports[cp.Name] = true
				p.ports[strconv.Itoa(cp.ContainerPort)] = true
			}
			if w.Kind != "Deployment" || c.Image != "citywatch" {
				continue
			}
			if c.LivenessProbe == nil || c.ReadinessProbe == nil {
				t.Errorf("Deployment %s: liveness and readiness probes are needed", w.Metadata.Name)
			}
			for _, pr := range []*probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
				if pr == nil {
					continue
				}
				var port any
				switch {
				case pr.HTTPGet != nil:
					port = pr.HTTPGet.Port
				case pr.TCPSocket != nil:
					port = pr.TCPSocket.Port
				default:
					t.Errorf("Deployment %s: a probe that is neither httpGet nor tcpSocket", w.Metadata.Name)
					continue
				}
				if !p.ports[toString(port)] {
					t.Errorf("Deployment %s: a probe on port %v, which the container does not declare", w.Metadata.Name, port)
				}
			}
		}
		pods = append(pods, p)
	}
	for _, o := range objs {
		if o["kind"] != "Service" {
			continue
		}
		s := convert[struct {
			Metadata struct{ Name string }
			Spec     struct {
				Selector map[string]string
				Ports    []struct {
					TargetPort any `yaml:"targetPort"`
				}
			}
		}](t, o)
		matched := false
		for _, p := range pods {
			if !selects(s.Spec.Selector, p.labels) {
				continue
			}
			matched = true
			for _, sp := range s.Spec.Ports {
				if !p.ports[toString(sp.TargetPort)] {
					t.Errorf("Service %s: targetPort %v is not a port of its pods", s.Metadata.Name, sp.TargetPort)
				}
			}
		}
		if !matched {
			t.Errorf("Service %s selects no pod", s.Metadata.Name)
		}
	}
	// PDBs for rules and dispatch, HPAs for the stateless roles.
	kinds := map[string][]string{}
	for _, o := range objs {
		kinds[toString(o["kind"])] = append(kinds[toString(o["kind"])], toString(mapOf(o["metadata"])["name"]))
	}
	for _, n := range []string{"citywatch-rules", "citywatch-dispatch"} {
		if !slices.Contains(kinds["PodDisruptionBudget"], n) {
			t.Errorf("no PodDisruptionBudget %s", n)
		}
	}
	for _, n := range []string{"citywatch-ingest", "citywatch-gateway", "citywatch-web"} {
		if !slices.Contains(kinds["HorizontalPodAutoscaler"], n) {
			t.Errorf("no HorizontalPodAutoscaler %s", n)
		}
	}
	// Secrets are templates outside the kustomization, without values.
	if slices.Contains(strs(kust["resources"]), "secrets.template.yaml") {
		t.Error("kustomization.yaml applies secrets.template.yaml: it would overwrite the real Secrets")
	}
	for _, d := range yamlDocs(t, "kubernetes/secrets.template.yaml") {
		if d["kind"] != "Secret" || d["data"] != nil {
			t.Errorf("secrets.template.yaml: %v is not a Secret with stringData", mapOf(d["metadata"])["name"])
		}
		for k, v := range mapOf(d["stringData"]) {
			if toString(v) != "" {
				t.Errorf("secrets.template.yaml: %s holds a value", k)
			}
		}
	}
}

func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// --- scale-out and topics -------------------------------------------------

func TestScaleOut(t *testing.T) {
	all := append(composeInvocations(t), k8sInvocations(t)...)
	for _, in := range all {
		if in.subcommand() != "run" {
			continue
		}
		cfg := loadConfig(t, in.config)
		roles := in.roles()
		if slices.Contains(roles, "rules") {
			if in.replicas > 1 && cfg.Rules.Shards < in.replicas {
				t.Errorf("%s: %d rules processes need rules.shards ≥ %d, %s has %d", in.where, in.replicas, in.replicas, in.config, cfg.Rules.Shards)
			}
		}
		if slices.Contains(roles, "dispatch") && in.replicas > 1 && !cfg.Dispatch.ShareDistricts {
			t.Errorf("%s: %d dispatchers need dispatch.share_districts (%s)", in.where, in.replicas, in.config)
		}
	}
}

type topicSpec struct {
	partitions string // a number or "$shards"
	days       int
}

func topicsOf(t *testing.T, path string) map[string]topicSpec {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]topicSpec{}
	for _, m := range regexp.MustCompile(`(?m)^topic ([a-z.]+) ("?\$?\w+"?) \$\(\((\d+) \* day\)\)`).FindAllStringSubmatch(string(b), -1) {
		d, _ := strconv.Atoi(m[3])
		out[m[1]] = topicSpec{strings.Trim(m[2], `"`), d}
	}
	return out
}

func TestTopics(t *testing.T) {
	compose, err := os.ReadFile("compose/topics.sh")
	if err != nil {
		t.Fatal(err)
	}
	if k8s, err := os.ReadFile("kubernetes/topics.sh"); err != nil || !bytes.Equal(k8s, compose) {
		t.Errorf("kubernetes/topics.sh must be a copy of compose/topics.sh (err %v)", err)
	}
	topics := topicsOf(t, "compose/topics.sh")
	want := append(slices.Clone(kafkaio.AllTopics), rules.TopicByKey, dispatch.TopicDistricts)
	for _, n := range want {
		if _, ok := topics[n]; !ok {
			t.Errorf("topics.sh does not create %s", n)
		}
	}
	for n := range topics {
		if !slices.Contains(want, n) {
			t.Errorf("topics.sh creates %s, which citywatch does not use", n)
		}
	}
	fuel := topics[kafkaio.TopicFuel].days
	for n, s := range topics {
		if n != kafkaio.TopicFuel && s.days < fuel && n != dispatch.TopicDistricts {
			t.Errorf("topic %s is kept %d days, less than the fuel topic's %d: personal data must go first", n, s.days, fuel)
		}
	}
	c, err := city.Default()
	if err != nil {
		t.Fatal(err)
	}
	if got := topics[dispatch.TopicDistricts].partitions; got != strconv.Itoa(len(c.Districts)) {
		t.Errorf("topic %s has %s partitions, the city %d districts", dispatch.TopicDistricts, got, len(c.Districts))
	}
	if got := topics[rules.TopicByKey].partitions; got != "$shards" {
		t.Errorf("topic %s has %s partitions, not RULES_SHARDS", rules.TopicByKey, got)
	}
	// RULES_SHARDS given to the script is rules.shards of the deployment.
	topicsSvc := mapOf(mapOf(composeFile(t)["services"])["topics"])
	if got, want := envOf(topicsSvc["environment"])["RULES_SHARDS"], strconv.Itoa(loadConfig(t, "compose/citywatch.yaml").Rules.Shards); got != want {
		t.Errorf("compose topics: RULES_SHARDS %s, rules.shards %s", got, want)
	}
	for _, w := range k8sWorkloads(t) {
		for _, ct := range w.Spec.Template.Spec.Containers {
			for _, e := range ct.Env {
				if e.Name == "RULES_SHARDS" && e.Value != strconv.Itoa(loadConfig(t, "kubernetes/config/citywatch.yaml").Rules.Shards) {
					t.Errorf("kubernetes %s: RULES_SHARDS %s differs from rules.shards", w.Metadata.Name, e.Value)
				}
			}
		}
	}
}
