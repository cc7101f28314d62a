package rootfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// MetaDir is the directory, in an images directory, that holds each
// image's Meta as <name>.json. Its leading dot keeps it out of image
// listings (no image name starts with a dot).
const MetaDir = ".meta"

// maxMetaBytes bounds a Meta file read back (its config comes from an
// image, which may come from anyone's registry).
const maxMetaBytes = 1 << 20

// Meta is what turnbox records about an image beside its root filesystem:
// where it came from, and the configuration sessions made from it
// inherit.
type Meta struct {
	// Name is the image's name in the images directory.
	Name string `json:"name"`
	// Source says where the image came from: "busybox", "import:<path>",
	// "pull:<reference>" or "snapshot:<snapshot id>".
	Source string `json:"source"`
	// Digest is the image manifest's digest ("sha256:..."), when the
	// image had one.
	Digest string `json:"digest,omitempty"`
	// Created is when turnbox made the image.
	Created time.Time `json:"created"`
	// SizeBytes is the size of the image's files.
	SizeBytes int64 `json:"size_bytes"`
	// Platform is the image's platform ("linux/amd64"), when known.
	Platform string `json:"platform,omitempty"`
	// Config is the image's runtime configuration.
	Config ImageConfig `json:"config"`
	// Volume, set on images saved from a snapshot, names the storage
	// volume that holds the image's root (its snapshot "base" is what
	// sessions clone); such an image has no directory of its own.
	Volume string `json:"volume,omitempty"`
	// Parent, set on images saved from a snapshot, is the image the
	// snapshot's session was made from: its directory is the sandbox's
	// outer root (the agent's, never seen by commands).
	Parent string `json:"parent,omitempty"`
}

// ImageConfig is the part of an OCI image's configuration a session
// inherits (a session's own env and cwd override it). Entrypoint and Cmd
// are recorded, never run unless asked.
type ImageConfig struct {
	// Env is the image's environment, KEY=VALUE.
	Env []string `json:"env,omitempty"`
	// WorkingDir is the image's working directory.
	WorkingDir string `json:"working_dir,omitempty"`
	// User is the image's user: a name, uid or uid:gid.
	User string `json:"user,omitempty"`
	// Entrypoint and Cmd are the image's command.
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
}

// metaPath is the file of image name's Meta in imagesDir.
func metaPath(imagesDir, name string) string {
	return filepath.Join(imagesDir, MetaDir, name+".json")
}

// WriteMeta records m for image m.Name in imagesDir, replacing what was
// recorded (written to a temporary file and renamed: readers see the old
// record or the new).
func WriteMeta(imagesDir string, m Meta) error {
	if m.Name == "" {
		return errors.New("rootfs: image meta without a name")
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("rootfs: image %q meta: %w", m.Name, err)
	}
	dir := filepath.Join(imagesDir, MetaDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+m.Name+".*")
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("rootfs: image %q meta: %w", m.Name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("rootfs: image %q meta: %w", m.Name, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	return os.Rename(tmp.Name(), metaPath(imagesDir, m.Name))
}

// ReadMeta returns what is recorded about image name in imagesDir; an
// image without a record (made before records were kept) fails with an
// error wrapping fs.ErrNotExist.
func ReadMeta(imagesDir, name string) (Meta, error) {
	f, err := os.Open(metaPath(imagesDir, name))
	if err != nil {
		return Meta{}, fmt.Errorf("rootfs: image %q meta: %w", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMetaBytes+1))
	if err != nil {
		return Meta{}, fmt.Errorf("rootfs: image %q meta: %w", name, err)
	}
	if len(b) > maxMetaBytes {
		return Meta{}, fmt.Errorf("rootfs: image %q meta: larger than %d bytes", name, maxMetaBytes)
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, fmt.Errorf("rootfs: image %q meta: %w", name, err)
	}
	return m, nil
}

// RemoveMeta removes image name's record from imagesDir (none is not an
// error).
func RemoveMeta(imagesDir, name string) error {
	if err := os.Remove(metaPath(imagesDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rootfs: %w", err)
	}
	return nil
}
