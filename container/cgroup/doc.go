// Package cgroup reads what the runtimes need from a sandbox's cgroups on
// the host, v1 or v2 (the hybrid layout of our machines has both): the
// directory of a process's cgroup for a controller, and the memory
// controller's count of OOM kills.
package cgroup
