package embedded

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
