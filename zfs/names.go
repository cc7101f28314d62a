package zfs

import (
	"fmt"
	"strings"
)

// MaxNameLength is the longest dataset or snapshot name ZFS accepts
// (ZFS_MAX_DATASET_NAME_LEN is 256 including the terminating NUL).
const MaxNameLength = 255

// MaxNestingDepth is OpenZFS's default limit on dataset nesting
// (zfs_max_dataset_nesting).
const MaxNestingDepth = 50

// validComponentChar reports whether c may appear in a name component.
// ZFS allows [A-Za-z0-9_.:-] everywhere; OpenZFS also allows a space, which
// zfs-fuse does not, so this package rejects it to stay portable.
func validComponentChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '.' || c == ':' || c == '-'
}

// ValidateComponent checks one path component of a dataset name or a
// snapshot's short name: non-empty, not "." or "..", not starting with '-'
// (it would read as a command-line option), only [A-Za-z0-9_.:-].
// The error wraps ErrInvalidName.
func ValidateComponent(c string) error {
	if c == "" {
		return fmt.Errorf("%w: empty name component", ErrInvalidName)
	}
	if c == "." || c == ".." {
		return fmt.Errorf("%w: component %q is reserved", ErrInvalidName, c)
	}
	if c[0] == '-' {
		return fmt.Errorf("%w: component %q starts with '-'", ErrInvalidName, c)
	}
	for i := 0; i < len(c); i++ {
		if !validComponentChar(c[i]) {
			return fmt.Errorf("%w: invalid character %q in %q (want [A-Za-z0-9_.:-])", ErrInvalidName, c[i], c)
		}
	}
	return nil
}

// ValidateDataset checks a filesystem or volume name "pool/a/b": at most
// MaxNameLength bytes and MaxNestingDepth levels, components valid by
// ValidateComponent, no '@' or '#', no leading or trailing '/', and a pool
// name starting with a letter. The error wraps ErrInvalidName.
func ValidateDataset(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty dataset name", ErrInvalidName)
	}
	if len(name) > MaxNameLength {
		return fmt.Errorf("%w: dataset name %.40q... is %d bytes, over %d", ErrInvalidName, name, len(name), MaxNameLength)
	}
	if strings.ContainsAny(name, "@#") {
		return fmt.Errorf("%w: dataset name %q contains '@' or '#'", ErrInvalidName, name)
	}
	parts := strings.Split(name, "/")
	if len(parts) > MaxNestingDepth {
		return fmt.Errorf("%w: dataset %q nests %d levels, over %d", ErrInvalidName, name, len(parts), MaxNestingDepth)
	}
	for _, p := range parts {
		if err := ValidateComponent(p); err != nil {
			return fmt.Errorf("dataset %q: %w", name, err)
		}
	}
	if c := parts[0][0]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
		return fmt.Errorf("%w: pool name %q must start with a letter", ErrInvalidName, parts[0])
	}
	return nil
}

// ValidateSnapshot checks a full snapshot name "pool/fs@snap": a valid
// dataset, exactly one '@', a short name valid by ValidateComponent, and
// at most MaxNameLength bytes in all. The error wraps ErrInvalidName.
func ValidateSnapshot(name string) error {
	ds, snap, ok := strings.Cut(name, "@")
	if !ok {
		return fmt.Errorf("%w: snapshot name %q has no '@'", ErrInvalidName, name)
	}
	if len(name) > MaxNameLength {
		return fmt.Errorf("%w: snapshot name %.40q... is %d bytes, over %d", ErrInvalidName, name, len(name), MaxNameLength)
	}
	if err := ValidateDataset(ds); err != nil {
		return err
	}
	if strings.Contains(snap, "/") {
		return fmt.Errorf("%w: snapshot short name %q contains '/'", ErrInvalidName, snap)
	}
	if err := ValidateComponent(snap); err != nil {
		return fmt.Errorf("snapshot %q: %w", name, err)
	}
	return nil
}

// ValidateName checks a dataset or, if it contains '@', a snapshot name.
func ValidateName(name string) error {
	if strings.Contains(name, "@") {
		return ValidateSnapshot(name)
	}
	return ValidateDataset(name)
}

// ValidatePropertyName checks a user property name: "module:property",
// lowercase [a-z0-9_.:-], containing a colon, at most 255 bytes (ZAP_MAXNAMELEN).
// Native property names are passed through unchecked by the drivers;
// this check is for user properties. The error wraps ErrInvalidName.
func ValidatePropertyName(p string) error {
	if p == "" || len(p) > 255 || !strings.Contains(p, ":") {
		return fmt.Errorf("%w: user property %q must be 1-255 bytes and contain ':'", ErrInvalidName, p)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			return fmt.Errorf("%w: invalid character %q in user property %q", ErrInvalidName, c, p)
		}
	}
	return nil
}

// SplitSnapshot splits "pool/fs@snap" into "pool/fs" and "snap".
func SplitSnapshot(name string) (dataset, snap string, ok bool) {
	return strings.Cut(name, "@")
}

// Parent returns the parent dataset of name ("" for a pool).
func Parent(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[:i]
	}
	return ""
}
