package main

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Host-only global flags (storage, runtime, limits, pool, ...) configure
// the embedded host a command opens on the state directory. They stay
// global, so that `turnbox --storage btrfs session ls` keeps working, but
// help shows them only on the commands that open a host.

const (
	hostFlagAnnotation = "turnbox/host-flag"
	opensHostKey       = "turnbox/opens-host"
)

// markHostFlags marks names in fs as host-only.
func markHostFlags(fs *pflag.FlagSet, names ...string) {
	for _, n := range names {
		if err := fs.SetAnnotation(n, hostFlagAnnotation, []string{"true"}); err != nil {
			panic("host flag " + n + ": " + err.Error()) // a programming error: the flag is not defined
		}
	}
}

// markOpensHost marks cmd as a command that opens a local host.
func markOpensHost(cmd *cobra.Command) {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[opensHostKey] = "true"
}

// inheritedBlock is the "Global Flags" part of cobra's usage template;
// scopeHelp splits it in two.
const inheritedBlock = `{{if .HasAvailableInheritedFlags}}

Global Flags:
{{.InheritedFlags.FlagUsages | trimTrailingWhitespaces}}{{end}}`

const splitBlock = `{{if .HasAvailableInheritedFlags}}{{with globalFlagUsages .}}

Global Flags:
{{.}}{{end}}{{with hostFlagUsages .}}

Host Flags (local mode: the host on the state directory):
{{.}}{{end}}{{end}}`

func init() {
	cobra.AddTemplateFunc("globalFlagUsages", func(c *cobra.Command) string { return inheritedUsages(c, false) })
	cobra.AddTemplateFunc("hostFlagUsages", func(c *cobra.Command) string { return inheritedUsages(c, true) })
}

// inheritedUsages is the usage of c's inherited flags that are (host) or
// are not host-only.
func inheritedUsages(c *cobra.Command, host bool) string {
	fs := pflag.NewFlagSet(c.Name(), pflag.ContinueOnError)
	c.InheritedFlags().VisitAll(func(f *pflag.Flag) {
		if _, ok := f.Annotations[hostFlagAnnotation]; ok == host {
			fs.AddFlag(f)
		}
	})
	return strings.TrimRight(fs.FlagUsages(), " \t\n")
}

// scopeHelp makes root's help (and so every command's) list the host-only
// flags apart, and hide them on commands that open no host.
func scopeHelp(root *cobra.Command) {
	if t := root.UsageTemplate(); strings.Contains(t, inheritedBlock) {
		root.SetUsageTemplate(strings.Replace(t, inheritedBlock, splitBlock, 1))
	}
	help := root.HelpFunc()
	root.SetHelpFunc(func(cmd *cobra.Command, args []string) {
		if cmd.Annotations[opensHostKey] != "true" {
			var hidden []*pflag.Flag
			root.PersistentFlags().VisitAll(func(f *pflag.Flag) {
				if _, ok := f.Annotations[hostFlagAnnotation]; ok && !f.Hidden {
					f.Hidden = true
					hidden = append(hidden, f)
				}
			})
			defer func() {
				for _, f := range hidden {
					f.Hidden = false
				}
			}()
		}
		help(cmd, args)
	})
}
