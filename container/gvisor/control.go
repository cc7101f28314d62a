package gvisor

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// The sandbox process (runsc-sandbox) serves a control socket,
// <state dir>/runsc-<id>.sock, which the runsc CLI itself uses: a stream
// of JSON objects, one call {"method": ..., "arg": ...} answered by one
// result {"success": ..., "err": ..., "result": ...}. Pause and resume go
// through it directly: `runsc pause` and `runsc resume` do the same call
// after starting a Go process and taking runsc's state lock, which costs
// tens of milliseconds per call here, while the call itself takes about a
// millisecond. The kernel's own pause stops every task at a safe point, so
// it is safe with the systrap platform, unlike freezing the sandbox's
// cgroup underneath it.
//
// runsc's state file is not updated (it keeps saying "running" while the
// sandbox is paused); nothing reads it but `runsc state` and `list`, and
// Stop's `runsc delete --force` kills a paused sandbox all the same.

// Control methods of runsc's containerManager.
const (
	ctlPause  = "containerManager.Pause"
	ctlResume = "containerManager.Resume"
)

// controlSocket returns the path of sandbox id's control socket.
func (r *Runtime) controlSocket(id string) string {
	return filepath.Join(r.stateDir, "runsc-"+id+".sock")
}

// control calls method (whose argument and result are empty) on sandbox
// id's control server.
func (r *Runtime) control(ctx context.Context, id, method string) error {
	path := r.controlSocket(id)
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		// Too long for sockaddr_un: go through /proc/self/fd, as runsc
		// does.
		fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("gvisor: control socket %s: %w", path, err)
		}
		defer unix.Close(fd)
		path = "/proc/self/fd/" + strconv.Itoa(fd)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("gvisor: control socket of %s: %w", id, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		// Pausing waits for every task to stop; a sandbox that does not
		// answer in this long is broken.
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
	call := struct {
		Method string    `json:"method"`
		Arg    *struct{} `json:"arg"`
	}{Method: method}
	if err := json.NewEncoder(conn).Encode(&call); err != nil {
		return fmt.Errorf("gvisor: sending %s to %s: %w", method, id, err)
	}
	var res struct {
		Success bool   `json:"success"`
		Err     string `json:"err"`
	}
	// Once the call is sent it may have taken effect: a missing answer is
	// an error, never a reason to call again through the CLI (the
	// kernel counts pauses, so a second one would need two resumes).
	if err := json.NewDecoder(conn).Decode(&res); err != nil {
		return fmt.Errorf("gvisor: %s on %s: no answer: %w", method, id, err)
	}
	if !res.Success {
		return fmt.Errorf("gvisor: %s on %s: %s", method, id, res.Err)
	}
	return nil
}
