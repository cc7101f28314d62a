package main

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/embedded"
	turnboxv1 "github.com/turnbox/turnbox/remote/gen/turnbox/v1"
)

func imageSaveCmd(c *cli) *cobra.Command {
	var opts embedded.SaveImageOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "save SESSION NAME",
		Short: "Save a session's snapshot as an image new sessions start from",
		Long: `save makes a snapshot of SESSION the image NAME: new sessions (session
create --image NAME) start with the snapshot's whole root filesystem,
workspace included, and with the env, working directory and user the
session had from its own image (its own env on top). Without --snapshot
it takes a snapshot of the session now. The image is a copy-on-write
clone where the storage allows (btrfs, zfs) and outlives the session.
--replace replaces an image saved earlier under NAME; a pulled, imported
or built image is never replaced (remove it first).

With --server (or $TURNBOX_SERVER) it saves on the server.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := c.saveImage(cmd.Context(), args[0], args[1], opts)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), m)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "saved %s as image %s\n", m.Source, m.Name)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Snapshot, "snapshot", "", "the snapshot to save (default: take one now)")
	f.BoolVar(&opts.Replace, "replace", false, "replace an image saved earlier under NAME")
	f.BoolVar(&asJSON, "json", false, "print the new image's record as JSON")
	c.t.addFlags(cmd)
	markOpensHost(cmd)
	return cmd
}

// saveImage saves a snapshot of session id as image name on the target.
func (c *cli) saveImage(ctx context.Context, id, name string, opts embedded.SaveImageOptions) (embedded.ImageInfo, error) {
	ic, done, err := c.imageClient()
	if err != nil {
		return embedded.ImageInfo{}, err
	}
	defer done()
	if ic == nil {
		h, err := c.g.openHost(ctx)
		if err != nil {
			return embedded.ImageInfo{}, explainLocked(err)
		}
		defer closeHost(h)
		return h.SaveImage(ctx, id, name, opts)
	}
	resp, err := ic.SaveImage(ctx, connect.NewRequest(&turnboxv1.SaveImageRequest{
		SessionId: id, Name: name, SnapshotId: opts.Snapshot, Replace: opts.Replace}))
	if err != nil {
		return embedded.ImageInfo{}, err
	}
	return imageFromProto(resp.Msg.GetImage()), nil
}
