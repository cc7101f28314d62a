package zfs

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// parseRecords turns NUL-separated "name, property, value" triples into
// datasets in first-seen order, merging repeated names (a dataset reached
// from two of the names asked for) and dropping "-" (unset), as ParseGet
// does for the command's output. An incomplete last triple is ignored.
func parseRecords(b []byte) []Dataset {
	f := bytes.Split(bytes.TrimSuffix(b, []byte{0}), []byte{0})
	var res []Dataset
	idx := map[string]int{}
	for i := 0; i+2 < len(f); i += 3 {
		name, prop, val := string(f[i]), string(f[i+1]), string(f[i+2])
		j, ok := idx[name]
		if !ok {
			j = len(res)
			idx[name] = j
			res = append(res, Dataset{Name: name, Props: map[string]string{}})
		}
		if val != "-" {
			res[j].Props[prop] = val
		}
	}
	return res
}

// sortDatasets puts datasets in the order `zfs get` and `zfs list` print
// them: by filesystem name (byte order, so a parent comes before its
// children), a filesystem before its own snapshots, and snapshots of one
// filesystem by creation (the createtxg property, then name).
func sortDatasets(ds []Dataset) {
	sort.SliceStable(ds, func(i, j int) bool { return datasetLess(ds[i], ds[j]) })
}

func datasetLess(a, b Dataset) bool {
	afs, asnap, aIsSnap := strings.Cut(a.Name, "@")
	bfs, bsnap, bIsSnap := strings.Cut(b.Name, "@")
	if afs != bfs {
		return afs < bfs
	}
	if aIsSnap != bIsSnap {
		return !aIsSnap
	}
	at, aerr := strconv.ParseUint(a.Props["createtxg"], 10, 64)
	bt, berr := strconv.ParseUint(b.Props["createtxg"], 10, 64)
	if aerr == nil && berr == nil && at != bt {
		return at < bt
	}
	return asnap < bsnap
}

// destroyOrder returns the names of all, the datasets of a tree (with
// their type and origin properties, as Get lists them), in an order in
// which each can be destroyed one at a time: every snapshot before its
// filesystem, a filesystem after its children, and a clone before the
// snapshot it was made from when both are in the tree. Origins outside the
// tree do not constrain the order. It fails on a cycle, which ZFS cannot
// produce.
func destroyOrder(all []Dataset) ([]string, error) {
	idx := make(map[string]int, len(all))
	for i, d := range all {
		idx[d.Name] = i
	}
	// before[i] lists the datasets that all[i] must be destroyed before.
	before := make([][]int, len(all))
	need := make([]int, len(all))
	edge := func(first, then int) {
		before[first] = append(before[first], then)
		need[then]++
	}
	for i, d := range all {
		if fs, _, ok := strings.Cut(d.Name, "@"); ok {
			if j, ok := idx[fs]; ok {
				edge(i, j)
			}
			continue
		}
		if j, ok := idx[Parent(d.Name)]; ok {
			edge(i, j)
		}
		if j, ok := idx[d.Props["origin"]]; ok {
			edge(i, j)
		}
	}
	// Kahn's algorithm, taking ready datasets in listing order, so the
	// order is deterministic.
	var ready []int
	for i := range all {
		if need[i] == 0 {
			ready = append(ready, i)
		}
	}
	res := make([]string, 0, len(all))
	for len(ready) > 0 {
		i := ready[0]
		ready = ready[1:]
		res = append(res, all[i].Name)
		for _, j := range before[i] {
			if need[j]--; need[j] == 0 {
				ready = append(ready, j)
			}
		}
	}
	if len(res) != len(all) {
		return nil, fmt.Errorf("zfs: the datasets under %s depend on each other in a cycle: %w", all[0].Name, ErrBusy)
	}
	return res, nil
}
