package main

import (
	"cmp"
	"errors"
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
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/environment"
)

func imageCmd(g *globals) *cobra.Command {
	c := &cli{g: g, t: &target{}}
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
			if _, err := g.imageStore().Record(name, "busybox", &rootfs.ImportResult{Platform: "linux/" + runtime.GOARCH}); err != nil {
				return err
			}
			fmt.Println(dir)
			return nil
		},
	}, importCmd(g), pullCmd(c), imageRmCmd(c), imageLsCmd(c), imagePruneCmd(c), imageSaveCmd(c))
	return cmd
}

// imageStore is the image store of the state directory.
func (g *globals) imageStore() embedded.ImageStore {
	return embedded.ImageStore{Dir: filepath.Join(g.stateDir, "images"), DefaultImage: g.image}
}

func imageLsCmd(c *cli) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List images: name, digest, size, created, source",
		Long: `ls lists the images in <state-dir>/images with what turnbox recorded when
it made them (pull, import, build): the manifest digest, the size of the
files, when, and where from. An image made before records were kept is
listed with its name, size and directory time only. --json prints the
records, with the image's config (env, working directory, user, command).
With --server (or $TURNBOX_SERVER) it lists the server's images.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			metas, err := c.listImages(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, metas)
			}
			tw := newTable(out)
			fmt.Fprintln(tw, "NAME\tDIGEST\tSIZE\tCREATED\tSOURCE")
			for _, m := range metas {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Name, shortDigest(m.Digest), humanSize(m.SizeBytes),
					m.Created.Local().Format(time.DateTime), cmp.Or(m.Source, "-"))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the image records as JSON")
	c.t.addFlags(cmd)
	return cmd
}

// shortDigest is the first 12 hex digits of a "sha256:..." digest; "-"
// for none.
func shortDigest(d string) string {
	_, hex, ok := strings.Cut(d, ":")
	if !ok || hex == "" {
		return "-"
	}
	return hex[:min(12, len(hex))]
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

import contacts no registry (turnbox image pull does). On a machine that
cannot reach the registry, pull the image on one that can, then copy the
result here:

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
			abs, err := filepath.Abs(src)
			if err != nil {
				abs = src
			}
			warnImage(res.Platform, res.HasShell)
			if _, err := g.imageStore().Record(name, "import:"+abs, res); err != nil {
				return err
			}
			fmt.Println(dst)
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.Platform, "platform", "", "image platform to take from a multi-platform source, os/arch[/variant] (default: this host's, linux/"+runtime.GOARCH+")")
	cmd.Flags().StringVar(&opts.Ref, "ref", "", "image to take from a source with several: the OCI ref name (e.g. 12) or the docker tag (e.g. debian:12)")
	return cmd
}

// warnImage warns about an image just made that may not work here:
// another platform, no shell.
func warnImage(platform string, hasShell bool) {
	if host := "linux/" + runtime.GOARCH; platform != "" && !strings.HasPrefix(platform+"/", host+"/") {
		fmt.Fprintf(os.Stderr, "warning: the image is for %s, this host is %s: its programs may not run\n", platform, host)
	}
	if !hasShell {
		fmt.Fprintln(os.Stderr, "warning: the image has no /bin/sh: the bash tool will not work in its sessions")
	}
}

func pullCmd(c *cli) *cobra.Command {
	var opts embedded.PullImageOptions
	cmd := &cobra.Command{
		Use:   "pull REF [NAME]",
		Short: "Pull an image from an OCI or Docker v2 registry",
		Long: `pull downloads the image REF (debian:12, ghcr.io/org/app:1,
REPO@sha256:...) from its registry and flattens it into
<state-dir>/images/NAME, as import does. NAME defaults to the last
element of REF's repository (python for ghcr.io/org/python:3.12); an
existing image is kept unless --replace (sessions made from the old
one keep their copies; turnbox image prune frees its storage once no
session needs it).

The image for this host's platform is taken from a multi-platform
reference (choose another with --platform). Credentials come from the
docker config (~/.docker/config.json, $DOCKER_CONFIG) and its credential
helpers. Every layer is verified against its digest; a failed pull
leaves nothing. The image's config (env, working directory, user,
command) is recorded beside it: see turnbox image ls --json.

With --server (or $TURNBOX_SERVER) the server pulls the image into its
store (with its own credentials); interrupting the command cancels the
pull there.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := args[0]
			if len(args) == 2 {
				opts.Name = args[1]
			}
			name, err := embedded.PullName(ref, opts.Name)
			if err != nil {
				return err
			}
			p := newProgress(os.Stderr, "pulling "+name)
			opts.Progress = p.update
			m, err := c.pullImage(cmd.Context(), ref, opts)
			p.end()
			if errors.Is(err, environment.ErrAlreadyExists) {
				return fmt.Errorf("%w\nremove it with `turnbox image rm %s` to pull it again, or pull with --replace", err, name)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "pulled %s as %s (%s, %s), %s\n", ref, m.Name, cmp.Or(m.Platform, "unknown platform"), m.Digest, humanSize(m.SizeBytes))
			if c.t.url() != "" {
				return nil
			}
			dir := filepath.Join(c.g.imageStore().Dir, m.Name)
			_, err = os.Lstat(filepath.Join(dir, "bin", "sh"))
			warnImage(m.Platform, err == nil)
			fmt.Fprintln(cmd.OutOrStdout(), dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.Platform, "platform", "", "image platform to take from a multi-platform reference, os/arch[/variant] (default: this host's, linux/"+runtime.GOARCH+")")
	cmd.Flags().BoolVar(&opts.Insecure, "insecure", false, "use plain http (only to a registry on a loopback address)")
	cmd.Flags().BoolVar(&opts.Replace, "replace", false, "replace an image of the same name (sessions made from it keep their copies)")
	c.t.addFlags(cmd)
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
