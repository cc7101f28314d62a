#!/usr/bin/env bash
# bench2json.sh: turn BenchmarkDrivers output (go test -bench, any -count)
# into JSON, or into a table of medians and ratios.
#
#   bench2json.sh BENCH_OUTPUT CONDITIONS   JSON on stdout
#   bench2json.sh --table BENCH_OUTPUT      table on stdout
#
# Each result is BenchmarkDrivers/<driver>/<op>: ns/op of every run and
# their median. The table compares, per operation, the libzfs_core
# driver with the command driver and each with its raw baseline (the
# driver's bare call, raw-<op>). Plain awk (mawk works): no python here.
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
	if (!(name in cnt)) { order[++norder] = name; iters[name] = $2 }
	cnt[name]++
	v[name, cnt[name]] = $3 + 0
}
END {
	if (norder == 0) { print "bench2json.sh: no BenchmarkDrivers results in the input" > "/dev/stderr"; exit 1 }
	if (!table) {
		printf "{\n  \"benchmark\": \"BenchmarkDrivers\",\n  \"date\": \"%s\",\n  \"conditions\": \"%s\",\n  \"results\": [\n", date, esc(cond)
		for (k = 1; k <= norder; k++) {
			name = order[k]; d = name; sub(/\/.*/, "", d); op = name; sub(/^[^\/]*\//, "", op)
			runs = ""
			for (i = 1; i <= cnt[name]; i++) runs = runs (i > 1 ? ", " : "") v[name, i]
			printf "    {\"driver\": \"%s\", \"op\": \"%s\", \"iterations\": %d, \"ns_per_op\": [%s], \"median_ns_per_op\": %.0f}%s\n", esc(d), esc(op), iters[name], runs, median(name), (k < norder ? "," : "")
		}
		print "  ]\n}"
		exit 0
	}
	for (k = 1; k <= norder; k++) med[order[k]] = median(order[k])
	printf "%-16s %12s %12s %12s %12s %9s %9s\n", "operation (ms)", "command", "raw command", "libzfs_core", "raw lzc", "lzc/raw", "cmd/lzc"
	split("snapshot rollback-newest rollback-older clone", ops, " ")
	for (i = 1; i <= 4; i++) {
		op = ops[i]; rawop = (op == "rollback-newest") ? "raw-rollback" : "raw-" op
		c = med["command/" op]; l = med["libzfs_core/" op]; rc = med["command/" rawop]; rl = med["libzfs_core/" rawop]
		printf "%-16s %12s %12s %12s %12s %9s %9s\n", op, ms(c), ms(rc), ms(l), ms(rl), ratio(l, rl), ratio(c, l)
	}
}
function ms(x) { return x > 0 ? sprintf("%.1f", x / 1e6) : "-" }
function ratio(a, b) { return (a > 0 && b > 0) ? sprintf("%.2fx", a / b) : "-" }
' "$in"
