package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/environment"
)

// The lifecycle commands: pause, resume and hibernate a session.

// sessionOpCmd is a command that runs op on session SESSION and prints
// nothing.
func sessionOpCmd(c *cli, use, short string, op func(ctx context.Context, e sessionEnv) error) *cobra.Command {
	return &cobra.Command{
		Use:   use + " SESSION",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withSession(cmd.Context(), args[0], func(e sessionEnv) error { return op(cmd.Context(), e) })
		},
	}
}

func sessionPauseCmd(c *cli) *cobra.Command {
	return sessionOpCmd(c, "pause", "Freeze a session's sandbox (its processes stop running; calls are refused until resume)",
		func(ctx context.Context, e sessionEnv) error { return e.Pause(ctx) })
}

func sessionResumeCmd(c *cli) *cobra.Command {
	return sessionOpCmd(c, "resume", "Resume a paused or hibernated session",
		func(ctx context.Context, e sessionEnv) error { return e.Resume(ctx) })
}

func sessionHibernateCmd(c *cli) *cobra.Command {
	return sessionOpCmd(c, "hibernate", "Pause a session to disk: its processes are saved, its memory freed; resume brings them back, also after a restart (gvisor)",
		func(ctx context.Context, e sessionEnv) error {
			h, ok := e.(environment.Hibernator)
			if !ok {
				return fmt.Errorf("%w: hibernation on this host", environment.ErrCapabilityNotSupported)
			}
			return h.Hibernate(ctx)
		})
}
