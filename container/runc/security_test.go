package runc_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/containertest"
	"github.com/turnbox/turnbox/container/runc"
)

func TestCannotReadHostFiles(t *testing.T) {
	rt := newRuntime(t)
	sb, spec := start(t, rt)
	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "secret")
	if err := os.WriteFile(secret, []byte("host-secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Paths of the host, of the rootfs and of the runtime's own state.
	for _, p := range []string{secret, secretDir, rt.Root(), filepath.Join(rt.Root(), "state"), "/etc/machine-id", "/root/go"} {
		st, out, _ := containertest.Sh(t, sb, "cat "+p+" 2>&1 || ls "+p+" 2>&1")
		if strings.Contains(out, "host-secret") || (st.Code == 0 && p != "/etc/machine-id") {
			t.Errorf("%s readable in the sandbox: %q", p, out)
		}
	}
	// The volume's parent is bound, nothing above it.
	if out := containertest.MustSh(t, sb, "ls -a /.turnbox/vol"); strings.TrimSpace(out) != ".\n..\nws" && !strings.Contains(out, "ws") {
		t.Errorf("ls /.turnbox/vol: %q", out)
	}
	st, _, _ := containertest.Sh(t, sb, "cat /.turnbox/vol/../../"+strings.TrimPrefix(secret, "/"))
	if st.Code == 0 {
		t.Error("escaped the volume with ..")
	}
	// The root is read-only, the image untouched.
	for _, p := range []string{"/newfile", "/bin/newfile", "/etc/passwd", "/.turnbox/agent"} {
		if st, _, _ := containertest.Sh(t, sb, "echo x >> "+p); st.Code == 0 {
			t.Errorf("%s writable", p)
		}
	}
	if _, err := os.Stat(filepath.Join(spec.RootFS, "newfile")); err == nil {
		t.Error("image modified")
	}
	containertest.MustSh(t, sb, "echo x > /tmp/x && echo y > /workspace/y && echo z > /dev/shm/z")
	// Privileged operations fail.
	for _, script := range []string{
		"mount -t tmpfs none /mnt",
		"mount -o remount,rw /",
		"mknod /tmp/sda b 8 0",
		"echo 1 > /proc/sys/kernel/sysrq",
		"hostname evil",
		"ip link add dummy0 type dummy",
	} {
		if st, out, errs := containertest.Sh(t, sb, script); st.Code == 0 {
			t.Errorf("%q succeeded: %q %q", script, out, errs)
		}
	}
	status := containertest.MustSh(t, sb, "cat /proc/self/status")
	if !strings.Contains(status, "NoNewPrivs:\t1") {
		t.Error("no_new_privs not set")
	}
	if runc.SeccompAvailable() && !strings.Contains(status, "Seccomp:\t2") {
		t.Error("seccomp filter not installed")
	}
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:\t"); ok && v == "000001ffffffffff" {
			t.Errorf("full capability bounding set: %s", line)
		}
	}
}

func TestCannotSeeHostProcesses(t *testing.T) {
	rt := newRuntime(t)
	sb, _ := start(t, rt)
	out := containertest.MustSh(t, sb, "ls /proc | grep '^[0-9]' | sort -n | tr '\\n' ' '")
	pids := strings.Fields(out)
	// pid 1 (the agent) and the pipeline (sh, ls, grep, sort, tr).
	if len(pids) > 8 || len(pids) == 0 || pids[0] != "1" {
		t.Errorf("pids visible in the sandbox: %v", pids)
	}
	if st, _, _ := containertest.Sh(t, sb, fmt.Sprintf("test -e /proc/%d", os.Getpid())); st.Code == 0 && os.Getpid() > 10 {
		t.Errorf("host test process %d visible", os.Getpid())
	}
	if got := strings.TrimSpace(containertest.MustSh(t, sb, "cat /proc/1/cmdline | tr '\\0' ' '")); !strings.HasPrefix(got, runc.AgentPath) {
		t.Errorf("pid 1 is %q, want the agent", got)
	}
	if got := containertest.MustSh(t, sb, "hostname"); got != "turnbox\n" {
		t.Errorf("hostname %q", got)
	}
}

func TestNetworkNone(t *testing.T) {
	rt := newRuntime(t)
	sb, _ := start(t, rt)
	if got := containertest.MustSh(t, sb, "ls /sys/class/net"); got != "lo\n" {
		t.Errorf("interfaces: %q, want lo only", got)
	}
	if got := containertest.MustSh(t, sb, "cat /sys/class/net/lo/operstate"); got == "down\n" {
		t.Errorf("lo is down")
	}
}

func TestNetworkHost(t *testing.T) {
	host, err := os.ReadDir("/sys/class/net")
	if err != nil {
		t.Skip(err)
	}
	rt := newRuntime(t)
	sb, _ := start(t, rt, withNetwork(container.NetworkHost))
	got := strings.Fields(containertest.MustSh(t, sb, "ls /sys/class/net"))
	if len(got) != len(host) {
		t.Errorf("host network: %v in the sandbox, %d on the host", got, len(host))
	}
}
