package embedded

import "github.com/turnbox/turnbox/container"

// SetOlderLayout makes new sessions of this process use the layout of
// older hosts (the volume is the workspace) until restore is called.
func SetOlderLayout() (restore func()) {
	newSessionsRootTree = false
	return func() { newSessionsRootTree = true }
}

// SetAfterImageBase makes fn run between a create's finding its image's
// base volume and cloning it, until restore is called.
func SetAfterImageBase(fn func()) (restore func()) {
	afterImageBase = fn
	return func() { afterImageBase = nil }
}

// SessionSandbox returns the running sandbox of session id on h (nil if
// none runs), for benchmarks that measure the runtime beside the host.
func SessionSandbox(h *Host, id string) container.Sandbox {
	s, err := h.lookup(id)
	if err != nil {
		return nil
	}
	return s.currentSandbox()
}
