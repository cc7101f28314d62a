// Package rootfs builds root filesystems for sandboxes. BuildBusybox makes a
// tiny one from the host's static busybox (Debian: apt install
// busybox-static), used by tests, benchmarks and `turnbox image build
// busybox`.
package rootfs
