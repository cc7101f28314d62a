package runc

// CgroupParent returns the cgroup under which the runtime makes its
// sandboxes' cgroups.
func (r *Runtime) CgroupParent() string { return r.cgroupParent }
