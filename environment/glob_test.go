package environment_test

import (
	"errors"
	"path"
	"testing"

	"github.com/turnbox/turnbox/environment"
)

func TestMatchGlob(t *testing.T) {
	cases := []struct {
		pattern, name string
		want          bool
	}{
		// A pattern without "/" matches the base name at any depth.
		{"*.go", "main.go", true},
		{"*.go", "a/b/main.go", true},
		{"*.go", "a/main.go.txt", false},
		{"*.go", "go", false},
		{"main.go", "cmd/x/main.go", true},
		{"a?c", "abc", true},
		{"a?c", "x/abc", true},
		{"a?c", "ac", false},
		{"[ab].txt", "d/b.txt", true},
		{`\*`, "*", true},
		{`\*`, "x", false},
		// "**" alone matches everything.
		{"**", "a", true},
		{"**", "a/b/c", true},
		{"**", ".hidden/x", true},
		// "**" matches zero or more whole elements.
		{"**/*.go", "main.go", true},
		{"**/*.go", "a/b/c.go", true},
		{"**/*.go", "a/b/c.txt", false},
		{"a/**", "a/b", true},
		{"a/**", "a/b/c", true},
		{"a/**", "b/c", false},
		{"a/**", "ab/c", false},
		{"a/**/c", "a/c", true},
		{"a/**/c", "a/x/y/c", true},
		{"a/**/c", "a/x/y/d", false},
		{"a/**/c", "a/x/c/d", false},
		{"**/**/x", "x", true},
		{"**/**/x", "p/q/x", true},
		{"a/**/b/**/c", "a/b/c", true},
		{"a/**/b/**/c", "a/1/b/2/3/c", true},
		{"a/**/b/**/c", "a/1/2/3/c", false},
		{"**/d/*.txt", "x/d/f.txt", true},
		{"**/d/*.txt", "x/d/e/f.txt", false},
		// With a "/", elements match one to one; "*" stays in its element.
		{"src/*.txt", "src/a.txt", true},
		{"src/*.txt", "src/x/a.txt", false},
		{"src/*.txt", "a.txt", false},
		{"*/a.txt", "x/a.txt", true},
		{"*/a.txt", "a.txt", false},
		{"*/a.txt", "x/y/a.txt", false},
		{"./*.txt", "a.txt", true},
		{"./src/*.txt", "src/a.txt", true},
		// Empty name never matches.
		{"*", "", false},
		{"**", "", false},
	}
	for _, c := range cases {
		got, err := environment.MatchGlob(c.pattern, c.name)
		if err != nil {
			t.Errorf("MatchGlob(%q, %q): %v", c.pattern, c.name, err)
			continue
		}
		if got != c.want {
			t.Errorf("MatchGlob(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

func TestMatchGlobBadPattern(t *testing.T) {
	for _, p := range []string{"[", "a[", `a\`, "src/[a-", "**/[", "[]a]/**/x"} {
		for _, name := range []string{"", "a", "src/a", "x/y/z"} {
			if _, err := environment.MatchGlob(p, name); !errors.Is(err, path.ErrBadPattern) {
				t.Errorf("MatchGlob(%q, %q): err = %v, want path.ErrBadPattern", p, name, err)
			}
		}
	}
}
