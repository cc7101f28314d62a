package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/turnbox/turnbox/environment"
)

// The published-port commands (docs/ports.md): publish, unpublish, ports.

// parsePort reads a port argument.
func parsePort(arg string) (int, error) {
	p, err := strconv.Atoi(arg)
	if err != nil {
		return 0, fmt.Errorf("%w: port %q is not a number", environment.ErrInvalidArgument, arg)
	}
	return p, environment.ValidatePort(p)
}

// portPath is where `turnbox serve` forwards session id's port, by path.
func portPath(id string, port int) string {
	return "/ports/" + id + "/" + strconv.Itoa(port) + "/"
}

func sessionPublishCmd(c *cli) *cobra.Command {
	var public, asJSON bool
	cmd := &cobra.Command{
		Use:   "publish SESSION PORT [--public]",
		Short: "Publish a port of a session's sandbox: turnbox serve forwards HTTP, WebSocket and TCP to it",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			port, err := parsePort(args[1])
			if err != nil {
				return err
			}
			return c.withSession(cmd.Context(), args[0], func(e sessionEnv) error {
				p, err := e.PublishPort(cmd.Context(), port, environment.PublishOptions{Public: public})
				if err != nil {
					return err
				}
				url := strings.TrimSuffix(c.t.url(), "/") + portPath(args[0], port)
				if asJSON {
					return printJSON(cmd.OutOrStdout(), struct {
						environment.PublishedPort
						Path string `json:"path"`
					}{p, url})
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), url)
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&public, "public", false, "let requests through without the server's token (anyone with the URL)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"port", "public", "path"}`)
	return cmd
}

func sessionUnpublishCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "unpublish SESSION PORT",
		Short: "End a port's publication (open connections stay open)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			port, err := parsePort(args[1])
			if err != nil {
				return err
			}
			return c.withSession(cmd.Context(), args[0], func(e sessionEnv) error { return e.UnpublishPort(cmd.Context(), port) })
		},
	}
}

func sessionPortsCmd(c *cli) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ports SESSION",
		Short: "List the ports a session publishes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withSession(cmd.Context(), args[0], func(e sessionEnv) error {
				ports, err := e.PublishedPorts(cmd.Context())
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), ports, asJSON, "PORT\tACCESS\tPATH", func(p environment.PublishedPort) string {
					return fmt.Sprintf("%d\t%s\t%s", p.Port, access(p.Public), portPath(args[0], p.Port))
				})
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// access names how a port is published.
func access(public bool) string {
	if public {
		return "public"
	}
	return "token"
}

// formatNetwork prints a network policy: its mode, then its rules.
func formatNetwork(p *environment.NetworkPolicy) string {
	if p == nil || p.Mode == "" {
		return "-"
	}
	if len(p.Allow) == 0 {
		return string(p.Mode)
	}
	return string(p.Mode) + " (allow " + strings.Join(p.Allow, ", ") + ")"
}

// formatPorts prints published ports: "3000, 8080 (public)".
func formatPorts(ports []environment.PublishedPort) string {
	if len(ports) == 0 {
		return "-"
	}
	out := make([]string, len(ports))
	for i, p := range ports {
		out[i] = strconv.Itoa(p.Port)
		if p.Public {
			out[i] += " (public)"
		}
	}
	return strings.Join(out, ", ")
}
