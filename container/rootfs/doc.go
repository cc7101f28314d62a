// Package rootfs builds root filesystems for sandboxes. BuildBusybox makes a
// tiny one from the host's static busybox (Debian: apt install
// busybox-static), used by tests, benchmarks and `turnbox image build
// busybox`. Import flattens an OCI image layout or a `docker save` tarball
// into a directory (`turnbox image import`), resolving every path inside
// the target with openat2(RESOLVE_IN_ROOT) so a hostile layer cannot write
// outside it.
package rootfs
