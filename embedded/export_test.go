package embedded

// SetOlderLayout makes new sessions of this process use the layout of
// older hosts (the volume is the workspace) until restore is called.
func SetOlderLayout() (restore func()) {
	newSessionsRootTree = false
	return func() { newSessionsRootTree = true }
}
