package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/embedded/ledger"
)

func imageRmCmd(c *cli) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove an image (refused while a session uses it)",
		Long: `rm removes the image NAME, and its record, from <state-dir>/images.
It is refused while a session of an isolated runtime uses the image
(named by the session, or the default image, --image, for sessions that
name none), or while images saved from its sessions' snapshots name it
as their parent: the error names them. Destroy those sessions first with
turnbox session rm. The ledger stays locked while the image is removed,
so no session can start on it meanwhile. --json prints the record of
the image removed.

With --server (or $TURNBOX_SERVER) it removes the server's image (the
server's default image applies). In local mode the storage volume of an
image saved from a snapshot is left for turnbox image prune.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := c.removeImage(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), m)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed image %s\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&c.g.image, "image", "", "the hosts' default image, used by sessions that name none (default busybox)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the removed image's record as JSON")
	c.t.addFlags(cmd)
	return cmd
}

// removeImageLocal removes image name from the state directory's store
// unless a session recorded in its ledger uses it. The ledger is held
// open (locked) throughout.
func (g *globals) removeImageLocal(name string) (embedded.ImageInfo, error) {
	var recs []ledger.SessionRecord
	ledgerPath := filepath.Join(g.stateDir, "ledger.db")
	if _, err := os.Stat(ledgerPath); err == nil {
		lg, err := ledger.Open(ledgerPath)
		if err != nil {
			return embedded.ImageInfo{}, explainLocked(err)
		}
		defer lg.Close()
		if recs, err = lg.Sessions(); err != nil {
			return embedded.ImageInfo{}, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return embedded.ImageInfo{}, err
	}
	return g.imageStore().Remove(name, recs)
}

func imagePruneCmd(c *cli) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Free the storage of removed and replaced images that no session needs",
		Long: `prune destroys the storage volumes made from images (what sessions
clone their root from) that no current image maps to any more: those of
removed images, and of images replaced by pull --replace or changed on
disk. It also deletes the directories of replaced images once no
session uses the image name. A volume that sessions' clones still
depend on (zfs) is kept for a later prune. Nothing else ever deletes
them: images' storage is garbage-collected only by this command. It
prints what it removed and the space freed (0 where the storage cannot
tell); --json prints {"removed": [...], "freed_bytes": N}.

In local mode it opens the host on the state directory (host flags
apply); with --server (or $TURNBOX_SERVER) the server prunes its host.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep, err := c.pruneImages(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, rep)
			}
			for _, r := range rep.Removed {
				fmt.Fprintf(out, "removed %s\n", r)
			}
			fmt.Fprintf(out, "freed %s\n", humanSize(rep.FreedBytes))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print what was removed as JSON")
	c.t.addFlags(cmd)
	markOpensHost(cmd)
	return cmd
}

// pruneView is what image prune prints.
type pruneView struct {
	Removed    []string `json:"removed"`
	FreedBytes int64    `json:"freed_bytes"`
}

// pruneImagesLocal prunes the images of the host on the state directory.
func (g *globals) pruneImagesLocal(ctx context.Context) (pruneView, error) {
	h, err := g.openHost(ctx)
	if err != nil {
		return pruneView{}, explainLocked(err)
	}
	defer closeHost(h)
	rep, err := h.PruneImages(ctx)
	return pruneView{Removed: append([]string{}, rep.Removed...), FreedBytes: rep.FreedBytes}, err
}
