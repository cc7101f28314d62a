package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/turnbox/turnbox/environment"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

// maxExactInt is the largest integer a double (a google.protobuf.Value
// number) holds exactly: 2^53.
const maxExactInt = 1 << 53

// ArgumentsFromJSON converts a tool's JSON input to the arguments field.
// ok is false when input is not one JSON object or would not survive the
// trip exactly (an integer beyond +-2^53, a string that is not UTF-8): the
// caller then sends the bytes in the input field.
func ArgumentsFromJSON(input []byte) (args *structpb.Struct, ok bool) {
	if !utf8.Valid(input) {
		return nil, false // encoding/json would turn it into U+FFFD
	}
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false // trailing data: let the host judge the bytes
	}
	if !exactNumbers(obj) {
		return nil, false
	}
	s, err := structpb.NewStruct(obj)
	if err != nil {
		return nil, false // e.g. a string that is not valid UTF-8
	}
	return s, true
}

// exactNumbers replaces every json.Number in v (in place) by the float64
// a Value carries, and reports whether each one is exact there: integer
// literals within +-2^53 and any literal with a fraction or exponent (a
// float by intent).
func exactNumbers(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			f, ok := exactElem(e)
			if !ok {
				return false
			}
			v[k] = f
		}
	case []any:
		for i, e := range v {
			f, ok := exactElem(e)
			if !ok {
				return false
			}
			v[i] = f
		}
	}
	return true
}

// exactElem returns an element of an object or array with its numbers
// converted (exactNumbers), and whether they are exact.
func exactElem(e any) (any, bool) {
	if n, ok := e.(json.Number); ok {
		return numberValue(n)
	}
	return e, exactNumbers(e)
}

// numberValue parses a JSON number literal as a double and reports whether
// the double is exact (see exactNumbers).
func numberValue(n json.Number) (float64, bool) {
	s := n.String()
	if !strings.ContainsAny(s, ".eE") {
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil || i > maxExactInt || i < -maxExactInt {
			return 0, false
		}
		return float64(i), true
	}
	f, err := strconv.ParseFloat(s, 64)
	return f, err == nil
}

// ArgumentsToJSON encodes the arguments field as the JSON object the tools
// parse. Integral numbers are written as integer literals (1000000, not
// 1e+06) so that the tools' integer parameters decode; an integral number
// beyond +-2^53 or a non-finite one is ErrInvalidArgument, since the
// double may no longer be the number the client meant.
func ArgumentsToJSON(s *structpb.Struct) ([]byte, error) {
	v, err := plainValue(structpb.NewStructValue(s), "arguments")
	if err != nil {
		return nil, err
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: arguments: %v", environment.ErrInvalidArgument, err)
	}
	return out, nil
}

// plainValue converts a Value to what encoding/json marshals; path names
// it in errors.
func plainValue(v *structpb.Value, path string) (any, error) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		f := k.NumberValue
		switch {
		case math.IsNaN(f) || math.IsInf(f, 0):
			return nil, fmt.Errorf("%w: %s: number %v is not finite", environment.ErrInvalidArgument, path, f)
		case f != math.Trunc(f):
			return f, nil
		case math.Abs(f) > maxExactInt:
			return nil, fmt.Errorf("%w: %s: integer %.0f is beyond 2^53 and may have been rounded; send the tool input as JSON bytes in the input field", environment.ErrInvalidArgument, path, f)
		}
		return int64(f), nil
	case *structpb.Value_StructValue:
		fields := k.StructValue.GetFields()
		m := make(map[string]any, len(fields))
		for name, e := range fields {
			pv, err := plainValue(e, path+"."+name)
			if err != nil {
				return nil, err
			}
			m[name] = pv
		}
		return m, nil
	case *structpb.Value_ListValue:
		vals := k.ListValue.GetValues()
		l := make([]any, len(vals))
		for i, e := range vals {
			pv, err := plainValue(e, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			l[i] = pv
		}
		return l, nil
	case *structpb.Value_StringValue:
		return k.StringValue, nil
	case *structpb.Value_BoolValue:
		return k.BoolValue, nil
	default: // null, or no kind set
		return nil, nil
	}
}

// toolInput returns a wire tool request's input as the JSON bytes the
// host parses: exactly one of input and arguments must be set.
func toolInput(r *turnboxv1.ToolRequest) ([]byte, error) {
	hasInput, hasArgs := len(r.GetInput()) > 0, r.GetArguments() != nil
	switch {
	case hasInput && hasArgs:
		return nil, fmt.Errorf("%w: tool request sets both input and arguments; set one", environment.ErrInvalidArgument)
	case hasArgs:
		return ArgumentsToJSON(r.GetArguments())
	case hasInput:
		return r.GetInput(), nil
	}
	return nil, fmt.Errorf("%w: tool request sets neither arguments (a JSON object) nor input", environment.ErrInvalidArgument)
}

// textOrBytes splits output for the wire: valid UTF-8 goes in the string
// field, anything else in the bytes field.
func textOrBytes(b []byte) (string, []byte) {
	if utf8.Valid(b) {
		return string(b), nil
	}
	return "", b
}

// ProgressEncoder turns a tool's progress chunks into wire events whose
// text is whole UTF-8: an incomplete sequence at the end of a chunk (at
// most utf8.UTFMax-1 bytes per stream) is held back and sent with the
// stream's next chunk, or by Flush. Safe for concurrent use; its one lock
// guards held.
type ProgressEncoder struct {
	mu   sync.Mutex
	held map[string][]byte
}

// Encode returns p's wire event, nil when all of p was held back.
func (e *ProgressEncoder) Encode(p environment.ToolProgress) *turnboxv1.ToolProgress {
	e.mu.Lock()
	data := append(e.held[p.Stream], p.Data...)
	cut := incompleteTail(data)
	if e.held == nil {
		e.held = make(map[string][]byte)
	}
	e.held[p.Stream] = bytes.Clone(data[cut:])
	e.mu.Unlock()
	if cut == 0 {
		return nil
	}
	p.Data = data[:cut]
	return ToolProgressToProto(p)
}

// Flush returns the events of every stream's held-back bytes (sent as
// bytes: they are not valid UTF-8 on their own) and forgets them.
func (e *ProgressEncoder) Flush(toolCallID string) []*turnboxv1.ToolProgress {
	e.mu.Lock()
	defer e.mu.Unlock()
	streams := make([]string, 0, len(e.held))
	for s, b := range e.held {
		if len(b) > 0 {
			streams = append(streams, s)
		}
	}
	sort.Strings(streams)
	out := make([]*turnboxv1.ToolProgress, 0, len(streams))
	for _, s := range streams {
		out = append(out, ToolProgressToProto(environment.ToolProgress{ToolCallID: toolCallID, Stream: s, Data: e.held[s]}))
	}
	e.held = nil
	return out
}

// incompleteTail returns where b's trailing incomplete UTF-8 sequence
// starts (len(b) if there is none): the start byte of a sequence that
// lacks its continuation bytes. Invalid bytes are not held back.
func incompleteTail(b []byte) int {
	for i := len(b) - 1; i >= 0 && i > len(b)-utf8.UTFMax; i-- {
		c := b[i]
		if c < utf8.RuneSelf {
			return len(b)
		}
		if utf8.RuneStart(c) {
			if utf8.FullRune(b[i:]) {
				return len(b)
			}
			return i
		}
	}
	return len(b)
}
