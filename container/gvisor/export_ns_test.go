package gvisor

// CgroupParent returns the cgroup under which runsc puts the runtime's
// sandboxes.
func (r *Runtime) CgroupParent() string { return r.cgParent }
