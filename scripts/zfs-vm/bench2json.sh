#!/usr/bin/env bash
# bench2json.sh: turn BenchmarkDrivers output (go test -bench, any -count)
# into JSON, or into a table of medians and ratios.
#
#   bench2json.sh BENCH_OUTPUT CONDITIONS   JSON on stdout
#   bench2json.sh --table BENCH_OUTPUT      table on stdout
#
# Each result is BenchmarkDrivers/<driver>/<op> with ns/op and, for the
# paired benchmarks, one metric per step (ms/backend, ms/raw,
# ms/raw+props: each the median of that step within a run). JSON keeps
# every run's value of every metric and their median over runs. The table
# compares, per operation, the backend with its raw baseline (the
# driver's bare call, measured in the same iterations) for each driver,
# and the two drivers. Plain awk (mawk works): no python here.
set -euo pipefail

table=0
if [ "${1:-}" = --table ]; then table=1; shift; fi
in=${1:?usage: bench2json.sh [--table] BENCH_OUTPUT [CONDITIONS]}
cond=${2:-}
[ -f "$in" ] || { echo "bench2json.sh: $in: no such file" >&2; exit 1; }

awk -v table="$table" -v cond="$cond" -v date="$(date -u +%Y-%m-%dT%H:%M:%SZ)" '
function median(key,   n, i, j, a, t) {
	n = cnt[key]
	for (i = 1; i <= n; i++) a[i] = v[key, i]
	for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j+1] = a[j]; a[j+1] = t }
	if (n % 2) return a[(n + 1) / 2]
	return (a[n / 2] + a[n / 2 + 1]) / 2
}
function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return s }
/^BenchmarkDrivers\/[^ \t]+[ \t]+[0-9]+[ \t]+[0-9.]+ ns\/op/ {
	name = $1
	sub(/^BenchmarkDrivers\//, "", name)
	sub(/-[0-9]+$/, "", name)
	if (!(name in iters)) { order[++norder] = name; iters[name] = $2 }
	for (f = 3; f < NF; f += 2) {
		key = name SUBSEP $(f + 1)
		if (!(key in cnt)) units[name] = units[name] (units[name] == "" ? "" : " ") $(f + 1)
		cnt[key]++
		v[key, cnt[key]] = $f + 0
	}
}
function m(name, unit,   key) { key = name SUBSEP unit; return (key in cnt) ? median(key) : 0 }
END {
	if (norder == 0) { print "bench2json.sh: no BenchmarkDrivers results in the input" > "/dev/stderr"; exit 1 }
	if (!table) {
		printf "{\n  \"benchmark\": \"BenchmarkDrivers\",\n  \"date\": \"%s\",\n  \"conditions\": \"%s\",\n  \"results\": [\n", date, esc(cond)
		for (k = 1; k <= norder; k++) {
			name = order[k]; d = name; sub(/\/.*/, "", d); op = name; sub(/^[^\/]*\//, "", op)
			printf "    {\"driver\": \"%s\", \"op\": \"%s\", \"iterations\": %d, \"metrics\": {", esc(d), esc(op), iters[name]
			nu = split(units[name], us, " ")
			for (u = 1; u <= nu; u++) {
				key = name SUBSEP us[u]
				runs = ""
				for (i = 1; i <= cnt[key]; i++) runs = runs (i > 1 ? ", " : "") v[key, i]
				printf "%s\"%s\": {\"runs\": [%s], \"median\": %s}", (u > 1 ? ", " : ""), esc(us[u]), runs, median(key)
			}
			printf "}}%s\n", (k < norder ? "," : "")
		}
		print "  ]\n}"
		exit 0
	}
	printf "%-22s %10s %10s %10s %10s %8s %8s %8s\n", "operation (ms)", "command", "raw cmd", "lzc", "raw lzc", "cmd/raw", "lzc/raw", "cmd/lzc"
	row("snapshot", "ms/backend", "ms/raw")
	row("snapshot", "ms/backend", "ms/raw+props", "snapshot (raw+props)")
	row("rollback-newest", "ms/backend", "ms/raw")
	row("clone-idle", "ms/backend", "ms/raw")
	row("destroy-volume", "ms/backend", "ms/raw")
	row("rollback-older", "ns/op", "")
	row("clone", "ns/op", "", "clone (back to back)")
	row("clone-4-at-once", "ns/op", "", "4 clones at once")
}
function row(op, bu, ru, label,   c, l, rc, rl, sc) {
	sc = (bu == "ns/op") ? 1e6 : 1
	c = m("command/" op, bu) / sc; l = m("libzfs_core/" op, bu) / sc
	rc = (ru == "") ? 0 : m("command/" op, ru); rl = (ru == "") ? 0 : m("libzfs_core/" op, ru)
	printf "%-22s %10s %10s %10s %10s %8s %8s %8s\n", (label == "" ? op : label), ms(c), ms(rc), ms(l), ms(rl), ratio(c, rc), ratio(l, rl), ratio(c, l)
}
function ms(x) { return x > 0 ? sprintf("%.1f", x) : "-" }
function ratio(a, b) { return (a > 0 && b > 0) ? sprintf("%.2fx", a / b) : "-" }
' "$in"
