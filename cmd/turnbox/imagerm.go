package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/container/rootfs"
	"github.com/turnbox/turnbox/embedded"
	"github.com/turnbox/turnbox/embedded/ledger"
	"github.com/turnbox/turnbox/environment"
)

func imageRmCmd(g *globals) *cobra.Command {
	var defaultImage string
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove an image (refused while a session uses it)",
		Long: `rm removes the image NAME, and its record, from <state-dir>/images.
It is refused while a session of an isolated runtime uses the image
(named by the session, or the default image, --image, for sessions that
name none): destroy those sessions first with turnbox session rm. The
ledger stays locked while the image is removed, so no session can start
on it meanwhile.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := removeImage(g.stateDir, args[0], cmp.Or(defaultImage, embedded.DefaultImage)); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed image %s\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&defaultImage, "image", "", "the hosts' default image, used by sessions that name none (default busybox)")
	return cmd
}

// removeImage removes image name from stateDir/images unless a session
// recorded in stateDir's ledger uses it; def is the image of sessions
// that name none. The ledger is held open (locked) throughout.
func removeImage(stateDir, name, def string) error {
	if err := environment.ValidateImageName(name); err != nil {
		return fmt.Errorf("image name: %w", err)
	}
	dir := filepath.Join(stateDir, "images", name)
	if _, err := os.Lstat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("image %q not found in %s (see turnbox image ls): %w", name, filepath.Dir(dir), environment.ErrInvalidArgument)
		}
		return err
	}
	ledgerPath := filepath.Join(stateDir, "ledger.db")
	if _, err := os.Stat(ledgerPath); err == nil {
		lg, err := ledger.Open(ledgerPath)
		if err != nil {
			return err
		}
		defer lg.Close()
		users, err := imageUsers(lg, name, def)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return fmt.Errorf("image %q is used by session(s) %s; remove them first (turnbox session rm ID)",
				name, strings.Join(users, ", "))
		}
	}
	// Rename first, so that no half-removed image is ever used; image ls
	// skips names starting with a dot.
	trash := filepath.Join(filepath.Dir(dir), "."+name+".rm-"+strconv.Itoa(os.Getpid()))
	if err := os.Rename(dir, trash); err != nil {
		return fmt.Errorf("removing image %q: %w", name, err)
	}
	if err := rootfs.RemoveMeta(filepath.Dir(dir), name); err != nil {
		return fmt.Errorf("removing image %q's record: %w", name, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("removing image %q (now at %s): %w", name, trash, err)
	}
	return nil
}

// imageUsers returns the ids of the sessions in lg that use image name:
// those of isolated runtimes that name it, or name none while def is it.
func imageUsers(lg *ledger.Ledger, name, def string) ([]string, error) {
	recs, err := lg.Sessions()
	if err != nil {
		return nil, err
	}
	var users []string
	for _, r := range recs {
		if r.Runtime == string(embedded.ContainerRuntimeNone) {
			continue
		}
		var cfg environment.SessionConfig
		if len(r.Config) > 0 {
			if err := json.Unmarshal(r.Config, &cfg); err != nil {
				return nil, fmt.Errorf("session %s: decoding its config: %w", r.ID, err)
			}
		}
		if cmp.Or(cfg.Image, def) == name {
			users = append(users, r.ID)
		}
	}
	return users, nil
}
