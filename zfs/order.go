package zfs

import (
	"bytes"
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
