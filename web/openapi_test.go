package web

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"
)

// apiDoc is the part of the OpenAPI document the tests read.
type apiDoc struct {
	Paths      map[string]map[string]apiOp `yaml:"paths"`
	Components struct {
		Schemas   map[string]*schema `yaml:"schemas"`
		Responses map[string]struct {
			Content map[string]struct {
				Schema *schema `yaml:"schema"`
			} `yaml:"content"`
		} `yaml:"responses"`
	} `yaml:"components"`
}

type apiOp struct {
	Roles     string `yaml:"x-roles"`
	Responses map[string]struct {
		Ref     string `yaml:"$ref"`
		Content map[string]struct {
			Schema *schema `yaml:"schema"`
		} `yaml:"content"`
	} `yaml:"responses"`
}

// schema is the subset of JSON Schema the document uses.
type schema struct {
	Ref                  string             `yaml:"$ref"`
	Type                 string             `yaml:"type"`
	Required             []string           `yaml:"required"`
	Properties           map[string]*schema `yaml:"properties"`
	AdditionalProperties *schema            `yaml:"additionalProperties"`
	Items                *schema            `yaml:"items"`
	Enum                 []any              `yaml:"enum"`
	Nullable             bool               `yaml:"nullable"`
	AllOf                []*schema          `yaml:"allOf"`
	Format               string             `yaml:"format"`
}

func loadDoc(t testing.TB) *apiDoc {
	t.Helper()
	var d apiDoc
	if err := yaml.Unmarshal(openAPI, &d); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	return &d
}

// docPath turns a mux pattern into the document's method and path.
func docPath(pattern string) (method, path string) {
	method, path, _ = strings.Cut(pattern, " ")
	switch {
	case path == "/{$}":
		path = "/"
	case strings.HasSuffix(path, "/"):
		path += "{path}"
	}
	return strings.ToLower(method), path
}

// TestRoutesDocumented checks that every registered route is in the
// document with the same roles as its policy, and every documented route
// is registered.
func TestRoutesDocumented(t *testing.T) {
	s := newBareServer(t)
	doc := loadDoc(t)
	var registered, documented []string
	for _, r := range s.routes {
		m, p := docPath(r.pattern)
		registered = append(registered, m+" "+p)
		op, ok := doc.Paths[p][m]
		if !ok {
			continue
		}
		if op.Roles != r.policy.String() {
			t.Errorf("%s: x-roles %q, policy %q", r.pattern, op.Roles, r.policy.String())
		}
	}
	for p, ops := range doc.Paths {
		for m := range ops {
			if m == "parameters" {
				continue
			}
			documented = append(documented, m+" "+p)
		}
	}
	sort.Strings(registered)
	sort.Strings(documented)
	if diff := cmp.Diff(documented, registered); diff != "" {
		t.Errorf("documented (-) vs registered (+) routes:\n%s", diff)
	}
}

// TestEveryRouteHasPolicy fails for a route registered without a policy
// (the zero policy, which would admit nobody by accident rather than by
// choice) and checks deny by default for the rest.
func TestEveryRouteHasPolicy(t *testing.T) {
	s := newBareServer(t)
	if len(s.routes) < 30 {
		t.Fatalf("only %d routes registered", len(s.routes))
	}
	for _, r := range s.routes {
		if !r.policy.public && len(r.policy.roles) == 0 {
			t.Errorf("%s has no policy", r.pattern)
		}
	}
}

func newBareServer(t testing.TB) *Server {
	t.Helper()
	s, err := NewApp(Config{}, Deps{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return time.Unix(1795708800, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// validateResponse checks body against the document's schema for the
// route pattern and status code. Bodies that are not JSON are skipped.
func validateResponse(doc *apiDoc, pattern string, code int, contentType string, body []byte) error {
	if !strings.HasPrefix(contentType, "application/json") {
		return nil
	}
	m, p := docPath(pattern)
	op, ok := doc.Paths[p][m]
	if !ok {
		return fmt.Errorf("%s is not documented", pattern)
	}
	resp, ok := op.Responses[fmt.Sprint(code)]
	if !ok {
		if code >= 400 {
			resp.Ref = "#/components/responses/Error"
		} else {
			return fmt.Errorf("%s: status %d is not documented", pattern, code)
		}
	}
	var sc *schema
	if resp.Ref != "" {
		r := doc.Components.Responses[strings.TrimPrefix(resp.Ref, "#/components/responses/")]
		sc = r.Content["application/json"].Schema
	} else {
		sc = resp.Content["application/json"].Schema
	}
	if sc == nil {
		return fmt.Errorf("%s %d: no JSON schema documented", pattern, code)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%s %d: not JSON: %v", pattern, code, err)
	}
	return doc.validate(sc, v, "$")
}

func (d *apiDoc) validate(s *schema, v any, at string) error {
	if s.Ref != "" {
		name := strings.TrimPrefix(s.Ref, "#/components/schemas/")
		ref, ok := d.Components.Schemas[name]
		if !ok {
			return fmt.Errorf("%s: unknown schema %s", at, s.Ref)
		}
		return d.validate(ref, v, at)
	}
	if v == nil {
		if s.Nullable {
			return nil
		}
		return fmt.Errorf("%s: null", at)
	}
	for _, sub := range s.AllOf {
		if err := d.validate(sub, v, at); err != nil {
			return err
		}
	}
	if len(s.Enum) > 0 && !slices.ContainsFunc(s.Enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
		return fmt.Errorf("%s: %v is not one of %v", at, v, s.Enum)
	}
	switch s.Type {
	case "":
	case "object":
		o, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %T, want object", at, v)
		}
		for _, r := range s.Required {
			if _, ok := o[r]; !ok {
				return fmt.Errorf("%s: %s is required", at, r)
			}
		}
		for k, x := range o {
			ps, ok := s.Properties[k]
			if !ok {
				ps = s.AdditionalProperties
			}
			if !ok && ps == nil && s.Properties != nil {
				return fmt.Errorf("%s: property %s is not documented", at, k)
			}
			if ps != nil {
				if err := d.validate(ps, x, at+"."+k); err != nil {
					return err
				}
			}
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: %T, want array", at, v)
		}
		if s.Items != nil {
			for i, x := range a {
				if err := d.validate(s.Items, x, fmt.Sprintf("%s[%d]", at, i)); err != nil {
					return err
				}
			}
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s: %T, want string", at, v)
		}
		if s.Format == "date-time" {
			if _, err := time.Parse(time.RFC3339, str); err != nil {
				return fmt.Errorf("%s: %q is not a date-time", at, str)
			}
		}
	case "number":
		if _, ok := v.(float64); !ok {
			return fmt.Errorf("%s: %T, want number", at, v)
		}
	case "integer":
		f, ok := v.(float64)
		if !ok || f != math.Trunc(f) {
			return fmt.Errorf("%s: %v, want integer", at, v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: %T, want boolean", at, v)
		}
	default:
		return fmt.Errorf("%s: schema type %q not supported by the test validator", at, s.Type)
	}
	return nil
}

func TestValidator(t *testing.T) {
	doc := loadDoc(t)
	tests := []struct {
		body    string
		wantErr bool
	}{
		{`{"name":"a","role":"operator","districts":[]}`, false},
		{`{"name":"a","role":"boss","districts":[]}`, true},
		{`{"name":"a","role":"operator"}`, true},
		{`{"name":"a","role":"operator","districts":[1]}`, true},
		{`{"name":"a","role":"operator","districts":[],"extra":1}`, true},
	}
	for _, tt := range tests {
		err := validateResponse(doc, "GET /api/me", 200, "application/json", []byte(tt.body))
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: err = %v, want error %v", tt.body, err, tt.wantErr)
		}
	}
}
