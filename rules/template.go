package rules

import (
	"errors"
	"strconv"
	"strings"
)

// template is a parsed summary line: literal text and {placeholders}.
type template struct {
	parts []tmplPart
}

type tmplPart struct {
	lit  string
	name string // placeholder, when lit is ""
	zh   bool   // {name|zh}: render a known value in Chinese
}

func parseTemplate(s string) (template, error) {
	var t template
	for s != "" {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			t.parts = append(t.parts, tmplPart{lit: s})
			break
		}
		if i > 0 {
			t.parts = append(t.parts, tmplPart{lit: s[:i]})
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return template{}, errors.New("unclosed '{'")
		}
		name := s[i+1 : i+j]
		p := tmplPart{name: name}
		if n, ok := strings.CutSuffix(name, "|zh"); ok {
			p.name, p.zh = n, true
		}
		if p.name == "" {
			return template{}, errors.New("empty placeholder {}")
		}
		t.parts = append(t.parts, p)
		s = s[i+j+1:]
	}
	return t, nil
}

// render writes the template with values from lookup; an unknown
// placeholder is written as is, so that a typo shows.
func (t template) render(lookup func(name string) (string, bool)) string {
	var b strings.Builder
	for _, p := range t.parts {
		if p.name == "" {
			b.WriteString(p.lit)
			continue
		}
		v, ok := lookup(p.name)
		if !ok {
			b.WriteString("{" + p.name + "}")
			continue
		}
		if p.zh {
			if z, ok := zhNames[v]; ok {
				v = z
			}
		}
		b.WriteString(v)
	}
	return b.String()
}

func (t template) empty() bool { return len(t.parts) == 0 }

// zhNames are the Chinese names of the contract's enumerated values.
var zhNames = map[string]string{
	"fight":      "打架斗殴",
	"crowd":      "人员聚集",
	"smoke_fire": "烟火",
	"loitering":  "徘徊",
	"intrusion":  "闯入",
	"fall":       "摔倒",
	"wrong_way":  "逆行",
	"video_loss": "视频丢失",
	"tamper":     "遮挡破坏",
	"blur":       "画面模糊",
	"offline":    "离线",
	"person":     "人员",
	"vehicle":    "车辆",
	"non_motor":  "非机动车",
	"face":       "人脸",
	"critical":   "特急",
	"high":       "紧急",
	"medium":     "一般",
	"low":        "提示",
}

// formatValue renders a detail value for a summary: numbers with at most
// one decimal.
func formatValue(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(roundTo(v, 1), 'f', -1, 64)
	case bool:
		if v {
			return "是"
		}
		return "否"
	case []string:
		return strings.Join(v, "、")
	}
	return ""
}

func roundTo(v float64, decimals int) float64 {
	p := 1.0
	for range decimals {
		p *= 10
	}
	if v < 0 {
		return -float64(int64(-v*p+0.5)) / p
	}
	return float64(int64(v*p+0.5)) / p
}
