// Package benchmarks measures turnbox's headline latencies (session create,
// tool exec, snapshot, rollback, fork) on a Host, beside baselines measured
// in the same run on the same workspace, and reports percentiles as the
// JSON document `turnbox bench --json` prints:
//
//	{"results":[{"op","backend","runtime","files","n","p50_ms","p90_ms","p99_ms","baseline"}]}
//
// baseline is empty for turnbox's own figures and names the comparison
// otherwise: "full-copy" (a recursive `cp -a` of the same workspace), "raw"
// (the bare btrfs ioctl or zfs command), "runsc-exec" and "runsc-run" (a
// runsc process per call), "runc-exec" (a runc binary process per call).
package benchmarks
