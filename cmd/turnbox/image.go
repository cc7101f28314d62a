package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/snapshot"
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
			if err := snapshot.ValidateName(name); err != nil {
				return fmt.Errorf("image name: %w", err)
			}
			dir := filepath.Join(g.stateDir, "images", name)
			if _, err := os.Stat(dir); err == nil {
				return fmt.Errorf("image %q exists at %s; remove it first to rebuild", name, dir)
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
	}, &cobra.Command{
		Use:   "ls",
		Short: "List images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ents, err := os.ReadDir(filepath.Join(g.stateDir, "images"))
			if err != nil && !os.IsNotExist(err) {
				return err
			}
			for _, e := range ents {
				if e.IsDir() && filepath.Ext(e.Name()) != ".building" {
					fmt.Println(e.Name())
				}
			}
			return nil
		},
	})
	return cmd
}
