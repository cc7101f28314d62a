package environment

import (
	"path"
	"strings"
)

// MatchGlob reports whether the slash-separated relative path name matches
// pattern. Each pattern element follows path.Match; the element "**" matches
// zero or more whole path elements. A pattern without "/" matches the base
// name at any depth (so "*.go" finds Go files everywhere, as users expect
// from a file search). The error is path.ErrBadPattern for a malformed
// pattern, whatever name is.
func MatchGlob(pattern, name string) (bool, error) {
	pattern = strings.TrimPrefix(pattern, "./")
	pats := strings.Split(pattern, "/")
	for _, p := range pats {
		if p == "**" {
			continue
		}
		if _, err := path.Match(p, ""); err != nil {
			return false, err
		}
	}
	if name == "" {
		return false, nil
	}
	if !strings.Contains(pattern, "/") && pattern != "**" {
		return path.Match(pattern, path.Base(name))
	}
	return matchElems(pats, strings.Split(name, "/")), nil
}

func matchElems(pats, elems []string) bool {
	for len(pats) > 0 {
		if pats[0] == "**" {
			// Collapse runs of ** and try every split point.
			for len(pats) > 0 && pats[0] == "**" {
				pats = pats[1:]
			}
			if len(pats) == 0 {
				return true
			}
			for i := 0; i <= len(elems); i++ {
				if matchElems(pats, elems[i:]) {
					return true
				}
			}
			return false
		}
		if len(elems) == 0 {
			return false
		}
		if ok, _ := path.Match(pats[0], elems[0]); !ok {
			return false
		}
		pats, elems = pats[1:], elems[1:]
	}
	return len(elems) == 0
}
