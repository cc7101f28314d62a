package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/environment"
)

// The file commands: session cp, session stat and session ls ID [PATH].
// They reach a session's files through cli.session: in process on the
// state directory, or with --server through a turnbox server.

// splitSessionPath splits a cp argument of the form SESSION:PATH. A local
// path containing ':' can be given as ./name or as an absolute path.
func splitSessionPath(arg string) (id, p string, ok bool) {
	if strings.HasPrefix(arg, "/") || strings.HasPrefix(arg, ".") {
		return "", arg, false
	}
	id, p, ok = strings.Cut(arg, ":")
	if !ok || id == "" || strings.Contains(id, "/") {
		return "", arg, false
	}
	return id, p, true
}

func sessionCpCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy a file into or out of a session (one side SESSION:PATH; - is stdin or stdout)",
		Long: "Copy one file between this machine and a session, streamed, in the style of docker cp:\n" +
			"  turnbox session cp ./data.bin ID:inputs/data.bin   upload (relative paths are under /workspace)\n" +
			"  turnbox session cp ID:/workspace/out.tar.gz .       download into a directory\n" +
			"A destination ending in / or naming an existing directory gets the source's base name.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			sid, spath, sRemote := splitSessionPath(args[0])
			did, dpath, dRemote := splitSessionPath(args[1])
			switch {
			case sRemote == dRemote:
				return fmt.Errorf("%w: exactly one of SRC and DST must be SESSION:PATH", environment.ErrInvalidArgument)
			case sRemote:
				fsys, done, err := c.session(cmd.Context(), sid)
				if err != nil {
					return err
				}
				defer done()
				return downloadTo(cmd.Context(), fsys, spath, dpath, cmd.OutOrStdout())
			default:
				fsys, done, err := c.session(cmd.Context(), did)
				if err != nil {
					return err
				}
				defer done()
				return uploadFrom(cmd.Context(), fsys, spath, dpath, cmd.InOrStdin())
			}
		},
	}
}

// uploadFrom uploads the local file src ("-": stdin) to dst in the
// session, keeping the file's permission bits.
func uploadFrom(ctx context.Context, fsys environment.FileSystem, src, dst string, stdin io.Reader) error {
	r := stdin
	var opts environment.UploadOptions
	if src != "-" {
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%w: %s is not a regular file (directories are not copied)", environment.ErrInvalidArgument, src)
		}
		r, opts.Mode = f, fi.Mode().Perm()
	}
	if dst == "" || strings.HasSuffix(dst, "/") {
		dst += filepath.Base(src)
	} else if fi, err := fsys.Stat(ctx, dst); err == nil && fi.Type == environment.TypeDir {
		dst = strings.TrimSuffix(dst, "/") + "/" + filepath.Base(src)
	}
	_, err := fsys.Upload(ctx, dst, r, opts)
	return err
}

// downloadTo downloads src from the session to the local path dst ("-":
// stdout), written to a temporary file renamed into place.
func downloadTo(ctx context.Context, fsys environment.FileSystem, src, dst string, stdout io.Writer) error {
	rc, info, err := fsys.Download(ctx, src)
	if err != nil {
		return err
	}
	defer rc.Close()
	if dst == "-" {
		_, err := io.Copy(stdout, rc)
		return err
	}
	if st, err := os.Stat(dst); (err == nil && st.IsDir()) || strings.HasSuffix(dst, "/") {
		dst = filepath.Join(dst, path.Base(src))
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".turnbox-cp-*")
	if err != nil {
		return err
	}
	_, err = io.Copy(tmp, rc)
	if err == nil {
		err = tmp.Chmod(info.Mode.Perm())
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	return err
}

func sessionStatCmd(c *cli) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stat SESSION PATH",
		Short: "Describe a file of a session (a symlink is not followed)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			fsys, done, err := c.session(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer done()
			fi, err := fsys.Stat(cmd.Context(), args[1])
			if err != nil {
				return err
			}
			return printFileInfos(cmd.OutOrStdout(), []environment.FileInfo{*fi}, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// lsFiles is session ls SESSION [PATH]: a directory of a session.
func (c *cli) lsFiles(cmd *cobra.Command, args []string, depth int, asJSON bool) error {
	ctx := cmd.Context()
	dir := "."
	if len(args) > 1 {
		dir = args[1]
	}
	fsys, done, err := c.session(ctx, args[0])
	if err != nil {
		return err
	}
	defer done()
	list, err := fsys.ListDir(ctx, dir, environment.ListOptions{Depth: depth})
	if err != nil {
		return err
	}
	return printFileInfos(cmd.OutOrStdout(), list, asJSON)
}

// printFileInfos prints entries as JSON or as an ls -l style table.
func printFileInfos(w io.Writer, list []environment.FileInfo, asJSON bool) error {
	if asJSON {
		if list == nil {
			list = []environment.FileInfo{}
		}
		return printJSON(w, list)
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "TYPE\tMODE\tOWNER\tSIZE\tMODIFIED\tPATH")
	for _, fi := range list {
		name := fi.Path
		if fi.LinkTarget != "" {
			name += " -> " + fi.LinkTarget
		}
		fmt.Fprintf(tw, "%s\t%04o\t%d:%d\t%d\t%s\t%s\n", fi.Type, uint32(fi.Mode.Perm()), fi.UID, fi.GID, fi.Size, fi.ModTime.Format(time.RFC3339), name)
	}
	return tw.Flush()
}
