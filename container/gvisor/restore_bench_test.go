package gvisor_test

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/turnbox/turnbox/container"
	"github.com/turnbox/turnbox/container/containertest"
	"github.com/turnbox/turnbox/container/gvisor"
)

// BenchmarkMemorySnapshot measures memory snapshots of a sandbox holding
// a process with 100 MiB of random data (testdata/memhog), of which 1 MiB
// changes before every snapshot, beside the bare runsc commands on the
// same sandbox in the same run. Per iteration:
//
//   - bare-ckpt: `runsc checkpoint --leave-running` of the sandbox;
//   - snapshot: SnapshotMemory whose during copies the workspace (the
//     file snapshot, cp -a: files-ms); the sandbox is frozen for all
//     of it but the quiesce ping (~1 ms), so snapshot-ms bounds the
//     freeze from above; ratio-snapshot is snapshot / (bare-ckpt +
//     files);
//   - bare-restore: `runsc restore --detach` of that image, and
//     bare-restore-bg the same with --background (pages load after the
//     sandbox starts), which RestoreSandbox uses;
//   - restore: RestoreSandbox of that image until memhog answers from
//     its restored memory; ratio-restore is restore / bare-restore.
//
// image-MB is the size of one image; bare-ckpt-flate-MB and -ms are one
// bare checkpoint with --compression=flate-best-speed.
// Run with: go test -run '^$' -bench MemorySnapshot -benchtime 5x ./container/gvisor
func BenchmarkMemorySnapshot(b *testing.B) {
	e := newEnv(b)
	hog := filepath.Join(e.workspace, "memhog")
	build := exec.Command("go", "build", "-o", hog, "./testdata/memhog")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build memhog: %v: %s", err, out)
	}
	mb := &memBench{b: b, e: e, dir: b.TempDir(), m: map[string][]time.Duration{}}
	mb.src = e.start(b, e.spec("bmsrc"))
	if _, err := mb.src.StartProcess(ctxT(b), container.ProcessSpec{Process: container.Process{Args: []string{"/workspace/memhog", "-mb", "100"}}}); err != nil {
		b.Fatal(err)
	}
	waitMemhog(b, mb.src)
	mb.snapVol = filepath.Join(b.TempDir(), "vol")
	copyTree(b, filepath.Dir(e.workspace), mb.snapVol)
	mb.bareBundle = writeBareBundle(b, e.rt, "bmsrc", mb.snapVol)
	flateImg := filepath.Join(mb.dir, "flate")
	askMemhog(b, mb.src, 1)
	flateD := mb.runsc("checkpoint", "--leave-running", "--compression=flate-best-speed", "--image-path", flateImg, "bmsrc")
	flateBytes := treeBytes(b, flateImg)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		mb.round(i)
	}
	b.StopTimer()
	for name, d := range mb.m {
		b.ReportMetric(containertest.MedianMS(d), name+"-ms")
	}
	med := func(n string) float64 { return containertest.MedianMS(mb.m[n]) }
	b.ReportMetric(med("snapshot")/(med("bare-ckpt")+med("files")), "ratio-snapshot")
	b.ReportMetric(med("restore")/med("bare-restore"), "ratio-restore")
	b.ReportMetric(float64(mb.imageBytes)/1e6, "image-MB")
	b.ReportMetric(float64(flateBytes)/1e6, "bare-ckpt-flate-MB")
	b.ReportMetric(float64(flateD.Microseconds())/1000, "bare-ckpt-flate-ms")
}

// memBench is BenchmarkMemorySnapshot's state.
type memBench struct {
	b          *testing.B
	e          *env
	src        *gvisor.Sandbox // runs memhog
	snapVol    string          // a copy of src's volume, for restores
	bareBundle string          // for bare runsc restores
	dir        string          // images
	m          map[string][]time.Duration
	imageBytes int64
}

// round is one iteration: each measure once (see BenchmarkMemorySnapshot).
func (mb *memBench) round(i int) {
	b, e := mb.b, mb.e
	askMemhog(b, mb.src, 1)
	bare := filepath.Join(mb.dir, "bare")
	mb.m["bare-ckpt"] = append(mb.m["bare-ckpt"], mb.runsc("checkpoint", "--leave-running", "--image-path", bare, "bmsrc"))
	_ = os.RemoveAll(bare)

	askMemhog(b, mb.src, 1)
	img, files := filepath.Join(mb.dir, "img"), filepath.Join(mb.dir, "files")
	t0 := time.Now()
	err := mb.src.SnapshotMemory(ctxT(b), img, func(context.Context) error {
		t1 := time.Now()
		copyTree(b, filepath.Dir(e.workspace), files)
		mb.m["files"] = append(mb.m["files"], time.Since(t1))
		return nil
	})
	mb.m["snapshot"] = append(mb.m["snapshot"], time.Since(t0))
	if err != nil {
		b.Fatal(err)
	}
	mb.imageBytes = treeBytes(b, img)

	id := "bmbare" + strconv.Itoa(i) + "x"
	mb.m["bare-restore"] = append(mb.m["bare-restore"], mb.runsc("restore", "--detach", "--image-path", img, "--bundle", mb.bareBundle, id))
	mb.runsc("delete", "--force", id)
	id += "bg"
	mb.m["bare-restore-bg"] = append(mb.m["bare-restore-bg"], mb.runsc("restore", "--background", "--detach", "--image-path", img, "--bundle", mb.bareBundle, id))
	mb.runsc("delete", "--force", id)

	t0 = time.Now()
	spec := e.spec("bmrest" + strconv.Itoa(i) + "x")
	spec.Workspace = filepath.Join(mb.snapVol, "ws")
	sb, err := e.rt.RestoreSandbox(ctxT(b), spec, img)
	if err != nil {
		b.Fatal(err)
	}
	askMemhog(b, sb, 0)
	mb.m["restore"] = append(mb.m["restore"], time.Since(t0))
	if err := sb.Stop(ctxT(b)); err != nil {
		b.Fatal(err)
	}
	_ = os.RemoveAll(img)
	_ = os.RemoveAll(files)
}

// runsc runs runsc with the runtime's flags and returns how long it took.
func (mb *memBench) runsc(args ...string) time.Duration {
	b := mb.b
	cmd := exec.Command(mb.e.rt.Runsc(), mb.e.rt.RunscArgs(container.NetworkNone, args...)...)
	// A restored sandbox's stdio must be of the kind it was at the
	// checkpoint (the agent's pipes: gVisor cannot poll /dev/null), and
	// *os.File, or Run waits for the detached sandbox.
	inR, inW, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	defer inW.Close()
	defer inR.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	defer outR.Close()
	defer outW.Close()
	logf, err := os.CreateTemp(mb.dir, "runsc-*.log")
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(logf.Name())
	defer logf.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, logf
	t0 := time.Now()
	err = cmd.Run()
	d := time.Since(t0)
	if err != nil {
		out, _ := os.ReadFile(logf.Name())
		b.Fatalf("runsc %v: %v: %s", args, err, out)
	}
	return d
}

// waitMemhog waits until memhog in sb serves requests.
func waitMemhog(b *testing.B, sb container.Sandbox) {
	deadline := time.Now().Add(60 * time.Second)
	for containertest.MustSh(b, sb, "test -p /tmp/memhog && echo ok || true") != "ok\n" {
		if time.Now().After(deadline) {
			b.Fatal("memhog did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	askMemhog(b, sb, 0)
}

// askMemhog has memhog in sb rewrite mib MiB of its memory and answer.
func askMemhog(b *testing.B, sb container.Sandbox, mib int) {
	b.Helper()
	st, out, errs := containertest.Sh(b, sb, `f=/tmp/r$$; mkfifo $f && echo "$f `+strconv.Itoa(mib)+`" > /tmp/memhog && cat $f; rm -f $f`)
	if st.Code != 0 || strings.TrimSpace(out) == "" {
		b.Fatalf("memhog in %s: %+v %q %q", sb.ID(), st, out, errs)
	}
}

// writeBareBundle writes a bundle for bare `runsc restore` runs: the
// OCI spec of sandbox id with the volume at vol, no cgroup and stdio
// left to runsc (the agent then ends at once; only the restore counts).
func writeBareBundle(b *testing.B, rt *gvisor.Runtime, id, vol string) string {
	data, err := os.ReadFile(filepath.Join(rt.Root(), "bundles", id, "config.json"))
	if err != nil {
		b.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		b.Fatal(err)
	}
	for i := range s.Mounts {
		if s.Mounts[i].Destination == gvisor.VolumeMount {
			s.Mounts[i].Source = vol
		}
	}
	s.Linux.CgroupsPath = ""
	if data, err = json.Marshal(&s); err != nil {
		b.Fatal(err)
	}
	bundle := filepath.Join(b.TempDir(), "bare-bundle")
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600); err != nil {
		b.Fatal(err)
	}
	return bundle
}

// treeBytes is the total size of the files under dir.
func treeBytes(b *testing.B, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}
