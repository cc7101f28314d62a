// Package benchmarks measures turnbox's headline latencies on a Host beside
// baselines measured in the same run on the same workspace, and renders
// the results as the report `turnbox bench --out DIR` writes: report.json
// (a Report), report.md (Markdown tables with ratios) and chart.svg (a bar
// chart drawn with gonum.org/v1/plot).
//
// Operations (Op* constants): create (a session until it accepts tool
// calls: on gvisor and runc that includes starting the sandbox), start
// (create plus the first bash call: time to first command), exec (a bash
// `true` round trip), the file tools read_file, write_file, edit_file and
// grep, turn_complete (TurnComplete after a one-file change), rollback,
// fork (a running session from a snapshot) and pause_resume.
//
// A baseline's Result carries the op it is compared with and its name in
// Baseline (Baseline* constants): full-copy (`cp -a`, under turn_complete)
// and raw (the bare btrfs ioctl or zfs command, under turn_complete,
// rollback and fork), which do not depend on the runtime and have Runtime
// ""; runsc-exec and runsc-run (under exec, gvisor); runc-exec (under
// exec, runc); gvisor-checkpoint (`runsc checkpoint --leave-running`,
// under turn_complete) and gvisor-restore (`runsc restore`, under
// rollback).
//
// Run measures one host; Suite measures a list of backend × runtime
// combinations (skipping, in the report, those that cannot run here) and
// the scaling series (workspace size and concurrent sessions, Series*).
// BenchmarkOps in this package's tests runs the same operation bodies as
// Go benchmarks.
package benchmarks
