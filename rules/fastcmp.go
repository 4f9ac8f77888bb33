package rules

import (
	"reflect"
	"unsafe"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
)

// expr reads struct fields through reflection, which boxes every string and
// float it loads: an allocation per field per event. Most filters are
// comparisons of a field with constants (behavior == "fight",
// confidence >= 0.8, status in ["video_loss", "tamper"]), so compileFilter
// rewrites those into calls of one function that reads the field in place
// and returns a bool, which expr does not box. Anything else is left to
// expr as written.

// envField locates one field of exprEnv.
type envField struct {
	offset uintptr
	kind   reflect.Kind // String, Float64, Int, Bool
}

var envFields = func() map[string]envField {
	m := map[string]envField{}
	t := reflect.TypeFor[exprEnv]()
	for i := range t.NumField() {
		f := t.Field(i)
		m[f.Tag.Get("expr")] = envField{offset: f.Offset, kind: f.Type.Kind()}
	}
	return m
}()

// comparison is one rewritten "field op constants".
type comparison struct {
	field envField
	op    string // ==, !=, <, <=, >, >=, in
	strs  []string
	num   float64
	nums  []float64
	b     bool
}

func (c *comparison) eval(env *exprEnv) bool {
	p := unsafe.Add(unsafe.Pointer(env), c.field.offset)
	switch c.field.kind {
	case reflect.String:
		s := *(*string)(p)
		switch c.op {
		case "==":
			return s == c.strs[0]
		case "!=":
			return s != c.strs[0]
		case "in":
			for _, v := range c.strs {
				if s == v {
					return true
				}
			}
			return false
		}
	case reflect.Bool:
		v := *(*bool)(p)
		if c.op == "==" {
			return v == c.b
		}
		return v != c.b
	case reflect.Float64, reflect.Int:
		var v float64
		if c.field.kind == reflect.Int {
			v = float64(*(*int)(p))
		} else {
			v = *(*float64)(p)
		}
		switch c.op {
		case "==":
			return v == c.num
		case "!=":
			return v != c.num
		case "<":
			return v < c.num
		case "<=":
			return v <= c.num
		case ">":
			return v > c.num
		case ">=":
			return v >= c.num
		case "in":
			for _, n := range c.nums {
				if v == n {
					return true
				}
			}
			return false
		}
	}
	return false
}

// fastCompare is the expr patcher that does the rewriting; comps collects
// the comparisons of one filter, in the order the calls refer to them.
type fastCompare struct {
	comps *[]comparison
}

const fastCmpFunc = "__cw_cmp"

// fastCompareOptions returns the expr options of one filter, the patcher
// and the function its rewritten calls name, and the comparisons the
// patcher collects.
func fastCompareOptions() ([]expr.Option, *[]comparison) {
	comps := new([]comparison)
	fn := func(params ...any) (any, error) {
		env, _ := params[0].(*exprEnv)
		i, _ := params[1].(int)
		if env == nil || i < 0 || i >= len(*comps) {
			return false, nil
		}
		return (*comps)[i].eval(env), nil
	}
	return []expr.Option{
		expr.Function(fastCmpFunc, fn, new(func(any, int) bool)),
		expr.Patch(fastCompare{comps: comps}),
	}, comps
}

// native is a filter evaluated without expr's machine: a boolean
// combination (and, or, not) of rewritten comparisons and constants. expr
// still parses and type-checks it; native only runs it, without the
// allocation a function call in expr costs.
type native func(env *exprEnv) bool

// nativeOf returns the native form of a compiled filter's tree, or nil
// when it holds anything else.
func nativeOf(n ast.Node, comps []comparison) native {
	switch n := n.(type) {
	case *ast.BoolNode:
		v := n.Value
		return func(*exprEnv) bool { return v }
	case *ast.CallNode:
		id, ok := n.Callee.(*ast.IdentifierNode)
		if !ok || id.Value != fastCmpFunc || len(n.Arguments) != 2 {
			return nil
		}
		i, ok := n.Arguments[1].(*ast.IntegerNode)
		if !ok || i.Value < 0 || i.Value >= len(comps) {
			return nil
		}
		c := &comps[i.Value]
		return c.eval
	case *ast.UnaryNode:
		if n.Operator != "!" && n.Operator != "not" {
			return nil
		}
		f := nativeOf(n.Node, comps)
		if f == nil {
			return nil
		}
		return func(env *exprEnv) bool { return !f(env) }
	case *ast.BinaryNode:
		l, r := nativeOf(n.Left, comps), nativeOf(n.Right, comps)
		if l == nil || r == nil {
			return nil
		}
		switch n.Operator {
		case "&&", "and":
			return func(env *exprEnv) bool { return l(env) && r(env) }
		case "||", "or":
			return func(env *exprEnv) bool { return l(env) || r(env) }
		}
	}
	return nil
}

// Visit implements ast.Visitor.
func (p fastCompare) Visit(node *ast.Node) {
	b, ok := (*node).(*ast.BinaryNode)
	if !ok {
		return
	}
	id, ok := b.Left.(*ast.IdentifierNode)
	if !ok {
		return
	}
	f, ok := envFields[id.Value]
	if !ok {
		return
	}
	c := comparison{field: f, op: b.Operator}
	switch b.Operator {
	case "==", "!=":
		if !c.constant(b.Right) {
			return
		}
	case "<", "<=", ">", ">=":
		if f.kind == reflect.String || f.kind == reflect.Bool || !c.constant(b.Right) {
			return
		}
	case "in":
		arr, ok := b.Right.(*ast.ArrayNode)
		if !ok || f.kind == reflect.Bool || len(arr.Nodes) == 0 {
			return
		}
		for _, n := range arr.Nodes {
			var one comparison
			one.field = f
			if !one.constant(n) {
				return
			}
			c.strs = append(c.strs, one.strs...)
			if f.kind != reflect.String {
				c.nums = append(c.nums, one.num)
			}
		}
	default:
		return
	}
	*p.comps = append(*p.comps, c)
	ast.Patch(node, &ast.CallNode{
		Callee: &ast.IdentifierNode{Value: fastCmpFunc},
		Arguments: []ast.Node{
			&ast.IdentifierNode{Value: "$env"},
			&ast.IntegerNode{Value: len(*p.comps) - 1},
		},
	})
}

// constant sets c's constant from n when n is a literal of the field's
// kind.
func (c *comparison) constant(n ast.Node) bool {
	switch v := n.(type) {
	case *ast.StringNode:
		if c.field.kind != reflect.String {
			return false
		}
		c.strs = []string{v.Value}
	case *ast.IntegerNode:
		if c.field.kind != reflect.Float64 && c.field.kind != reflect.Int {
			return false
		}
		c.num = float64(v.Value)
	case *ast.FloatNode:
		if c.field.kind != reflect.Float64 && c.field.kind != reflect.Int {
			return false
		}
		c.num = v.Value
	case *ast.BoolNode:
		if c.field.kind != reflect.Bool {
			return false
		}
		c.b = v.Value
	default:
		return false
	}
	return true
}
