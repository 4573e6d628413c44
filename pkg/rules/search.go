package rules

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
)

// Searching strings. The string extension library's indexOf and
// lastIndexOf compare the strings rune by rune at every position, in
// time proportional to the product of their lengths, and CEL charges
// that cost (and checks its deadline) only once the call returns: one
// call on two strings of a message, a megabyte each, ran for hours
// whatever the cost limit and deadline. These give the same answers in
// time proportional to the sum of the lengths; the cost the library
// charges for them is unchanged, so an evaluation whose search it prices
// above the cost limit still fails, at once rather than hours later.

// searchFunctions redefines indexOf and lastIndexOf (see above).
func searchFunctions() []cel.EnvOption {
	args := func(args []ref.Val) (s, sub string, off int64, ok bool) {
		a, ok1 := args[0].(types.String)
		b, ok2 := args[1].(types.String)
		if len(args) == 3 {
			o, ok3 := args[2].(types.Int)
			return string(a), string(b), int64(o), ok1 && ok2 && ok3
		}
		return string(a), string(b), 0, ok1 && ok2
	}
	result := func(i int64, err error) ref.Val {
		if err != nil {
			return types.NewErrFromString(err.Error())
		}
		return types.Int(i)
	}
	bind := func(fn string, search func(s, sub string, off int64, withOffset bool) (int64, error)) cel.OverloadOpt {
		return cel.FunctionBinding(func(vals ...ref.Val) ref.Val {
			s, sub, off, ok := args(vals)
			if !ok {
				return types.NewErr("%s: bad arguments", fn)
			}
			return result(search(s, sub, off, len(vals) == 3))
		})
	}
	first := func(s, sub string, off int64, _ bool) (int64, error) { return indexFrom(s, sub, off) }
	last := func(s, sub string, off int64, withOffset bool) (int64, error) {
		if withOffset {
			return lastIndexFrom(s, sub, off)
		}
		return lastIndex(s, sub)
	}
	str, num := cel.StringType, cel.IntType
	return []cel.EnvOption{
		cel.Function("indexOf",
			cel.MemberOverload("string_index_of_string", []*cel.Type{str, str}, num, bind("indexOf", first)),
			cel.MemberOverload("string_index_of_string_int", []*cel.Type{str, str, num}, num, bind("indexOf", first))),
		cel.Function("lastIndexOf",
			cel.MemberOverload("string_last_index_of_string", []*cel.Type{str, str}, num, bind("lastIndexOf", last)),
			cel.MemberOverload("string_last_index_of_string_int", []*cel.Type{str, str, num}, num, bind("lastIndexOf", last))),
	}
}

// runeString returns s with each byte that is not part of a valid UTF-8
// encoding replaced by U+FFFD, as converting it to runes does, so that its
// code points are those the library counts.
func runeString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return string([]rune(s))
}

// byteOffset returns the byte offset in s, valid UTF-8, of its code point
// n (len(s) for n at or past its end).
func byteOffset(s string, n int64) int {
	i := 0
	for ; n > 0 && i < len(s); n-- {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return i
}

// searchFrom does what indexFrom and lastIndexFrom share: it returns s
// with its code points as the library counts them (runeString) and their
// number, or, when off or sub leave nothing to search, the answer
// (done).
func searchFrom(s, sub string, off int64) (_ string, n, answer int64, done bool, err error) {
	if off < 0 {
		return "", 0, -1, true, fmt.Errorf("index out of range: %d", off)
	}
	s = runeString(s)
	n = int64(utf8.RuneCountInString(s))
	if sub == "" {
		return s, n, min(off, n), true, nil
	}
	if off >= n {
		return s, n, -1, true, nil
	}
	return s, n, 0, false, nil
}

// indexFrom is the library's indexOf(s, sub, off): the code point index
// of the first sub in s at or after code point off, or -1.
func indexFrom(s, sub string, off int64) (int64, error) {
	s, _, answer, done, err := searchFrom(s, sub, off)
	if done {
		return answer, err
	}
	from := byteOffset(s, off)
	i := strings.Index(s[from:], runeString(sub))
	if i < 0 {
		return -1, nil
	}
	// A match of valid UTF-8 in valid UTF-8 starts at a code point.
	return off + int64(utf8.RuneCountInString(s[from:from+i])), nil
}

// lastIndex is the library's lastIndexOf(s, sub).
func lastIndex(s, sub string) (int64, error) {
	n := int64(utf8.RuneCountInString(s))
	if sub == "" {
		return n, nil
	}
	// The library compares the byte lengths, before any invalid byte
	// becomes a code point of three.
	if len(s) < len(sub) {
		return -1, nil
	}
	return lastIndexFrom(s, sub, n-1)
}

// lastIndexFrom is the library's lastIndexOf(s, sub, off): the code
// point index of the last sub in s starting at or before code point off,
// or -1.
func lastIndexFrom(s, sub string, off int64) (int64, error) {
	s, n, answer, done, err := searchFrom(s, sub, off)
	if done {
		return answer, err
	}
	sub = runeString(sub)
	m := int64(utf8.RuneCountInString(sub))
	if off > n-m {
		off = n - m
	}
	if off < 0 {
		return -1, nil
	}
	// A match starting at or before off ends by code point off+m.
	end := byteOffset(s, off+m)
	i := strings.LastIndex(s[:end], sub)
	if i < 0 {
		return -1, nil
	}
	return int64(utf8.RuneCountInString(s[:i])), nil
}
