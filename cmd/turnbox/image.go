package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/environment"
)

func imageCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage base images (read-only root filesystems) under <state-dir>/images"}
	cmd.AddCommand(&cobra.Command{
		Use:   "build busybox [NAME]",
		Short: "Build a minimal image from the host's static busybox (apt-get install busybox-static)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "busybox" {
				return fmt.Errorf("unknown image recipe %q (known: busybox)", args[0])
			}
			name := "busybox"
			if len(args) == 2 {
				name = args[1]
			}
			if err := environment.ValidateImageName(name); err != nil {
				return fmt.Errorf("image name: %w", err)
			}
			dir := filepath.Join(g.stateDir, "images", name)
			if _, err := os.Stat(dir); err == nil {
				return fmt.Errorf("image %q exists at %s; remove it with `turnbox image rm %s` to build it again", name, dir, name)
			}
			tmp := dir + ".building"
			_ = os.RemoveAll(tmp)
			if err := rootfs.BuildBusybox(tmp); err != nil {
				_ = os.RemoveAll(tmp)
				return err
			}
			if err := os.Rename(tmp, dir); err != nil {
				return err
			}
			fmt.Println(dir)
			return nil
		},
	}, importCmd(g), imageRmCmd(g), &cobra.Command{
		Use:   "ls",
		Short: "List images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ents, err := os.ReadDir(filepath.Join(g.stateDir, "images"))
			if err != nil && !os.IsNotExist(err) {
				return err
			}
			for _, e := range ents {
				// Skip temporaries: NAME.building and .NAME.import-*.
				if e.IsDir() && filepath.Ext(e.Name()) != ".building" && !strings.HasPrefix(e.Name(), ".") {
					fmt.Println(e.Name())
				}
			}
			return nil
		},
	})
	return cmd
}

func importCmd(g *globals) *cobra.Command {
	var opts rootfs.ImportOptions
	cmd := &cobra.Command{
		Use:   "import PATH [NAME]",
		Short: "Import an OCI image layout directory or a `docker save` tarball as an image",
		Long: `import flattens a container image (its layers, with whiteouts applied) into
<state-dir>/images/NAME, a read-only root filesystem for sessions
(--image NAME, or a session's image). PATH is an OCI image layout
directory (with oci-layout and index.json) or a tarball written by
` + "`docker save`" + `. NAME defaults to PATH's base name without .tar; an
existing image is never overwritten.

turnbox does not contact registries. Pull the image on a machine that can,
then copy the result here:

  skopeo copy docker://debian:12 oci:debian:12   # an OCI layout in ./debian
  turnbox image import debian debian12

  docker pull debian:12 && docker save debian:12 -o debian.tar
  turnbox image import debian.tar debian12

When the source holds several images (a multi-platform index, or several
tags), the one for this host's platform is taken; choose another with
--platform linux/arm64 or by name with --ref (the OCI ref name, e.g. 12,
or the docker tag, e.g. debian:12). For an oci-archive tarball, untar it
and import the directory.

The bash tool needs /bin/sh in the image: import warns when it is missing.
Paths that are absolute or climb out with "..", and hard links that point
outside the image, fail the import; device nodes are skipped (a sandbox
has its own /dev). Ownership is kept when running as root.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src := args[0]
			name := strings.TrimSuffix(filepath.Base(filepath.Clean(src)), ".tar")
			if len(args) == 2 {
				name = args[1]
			}
			if err := environment.ValidateImageName(name); err != nil {
				if len(args) == 1 {
					return fmt.Errorf("cannot name the image after %s (%v): give a NAME", src, err)
				}
				return fmt.Errorf("image name: %w", err)
			}
			dst := filepath.Join(g.stateDir, "images", name)
			if _, err := os.Lstat(dst); err == nil {
				return fmt.Errorf("image %q exists at %s; remove it with `turnbox image rm %s` to import it again", name, dst, name)
			}
			p := newProgress(os.Stderr, "importing "+name)
			opts.Progress = p.update
			res, err := rootfs.Import(cmd.Context(), src, dst, opts)
			p.end()
			if err != nil {
				return err
			}
			platform := res.Platform
			if platform == "" {
				platform = "unknown platform"
			}
			fmt.Fprintf(os.Stderr, "imported %s (%s): %d layers, %d files, %d directories, %d symlinks, %d hard links",
				name, platform, res.Layers, res.Files, res.Dirs, res.Symlinks, res.Hardlinks)
			if res.SkippedDevices > 0 {
				fmt.Fprintf(os.Stderr, "; %d device nodes skipped", res.SkippedDevices)
			}
			if res.SkippedHardlinks > 0 {
				fmt.Fprintf(os.Stderr, "; %d hard links to deleted files skipped", res.SkippedHardlinks)
			}
			fmt.Fprintln(os.Stderr)
			if host := "linux/" + runtime.GOARCH; res.Platform != "" && !strings.HasPrefix(res.Platform+"/", host+"/") {
				fmt.Fprintf(os.Stderr, "warning: the image is for %s, this host is %s: its programs may not run\n", res.Platform, host)
			}
			if !res.HasShell {
				fmt.Fprintln(os.Stderr, "warning: the image has no /bin/sh: the bash tool will not work in its sessions")
			}
			fmt.Println(dst)
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.Platform, "platform", "", "image platform to take from a multi-platform source, os/arch[/variant] (default: this host's, linux/"+runtime.GOARCH+")")
	cmd.Flags().StringVar(&opts.Ref, "ref", "", "image to take from a source with several: the OCI ref name (e.g. 12) or the docker tag (e.g. debian:12)")
	return cmd
}

// progress prints an import's progress on a writer: a bar redrawn in
// place on a terminal, else a line per 10%.
type progress struct {
	w     io.Writer
	label string
	tty   bool
	shown int // last percentage (tty) or tenth (not tty) printed; -1: none
	drawn time.Time
	total int64
}

func newProgress(f *os.File, label string) *progress {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return &progress{w: f, label: label, tty: err == nil, shown: -1}
}

func (p *progress) update(done, total int64) {
	if total <= 0 {
		return
	}
	p.total = total
	pct := int(done * 100 / total)
	if !p.tty {
		if tenth := pct / 10; tenth > p.shown {
			p.shown = tenth
			fmt.Fprintf(p.w, "%s: %3d%% (%s of %s)\n", p.label, tenth*10, mb(done), mb(total))
		}
		return
	}
	// Redraw at most every 100ms, and at the end.
	if pct == p.shown || (pct < 100 && time.Since(p.drawn) < 100*time.Millisecond) {
		return
	}
	p.shown, p.drawn = pct, time.Now()
	const width = 30
	n := pct * width / 100
	fmt.Fprintf(p.w, "\r%s [%s%s] %3d%% %s of %s ", p.label, strings.Repeat("#", n), strings.Repeat(".", width-n), pct, mb(done), mb(total))
}

// end finishes a bar drawn in place.
func (p *progress) end() {
	if p.tty && p.shown >= 0 {
		fmt.Fprintln(p.w)
	}
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
