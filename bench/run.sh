#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Build the benchmarks (release, in build-bench/) and run each one that
# exists, or only those named: bench/run.sh [bench-ops ...]. The output,
# with the kernel, CPU and commit, goes to bench/results/<date>-<sha>.txt.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || exit 1
cd "$root" || exit 1

bash scripts/deps.sh || exit 1
if [ -f build-bench/meson-private/coredata.dat ]; then
	meson setup --reconfigure build-bench --buildtype=release >/dev/null
else
	meson setup build-bench --buildtype=release >/dev/null
fi || exit 1
meson compile -C build-bench || exit 1

if [ "$#" -gt 0 ]; then
	names=("$@")
else
	# Every benchmark the build made (bench/meson.build builds those
	# whose source exists).
	names=()
	for exe in build-bench/bench/bench-*; do
		[ -f "$exe" ] && [ -x "$exe" ] && names+=("$(basename "$exe")")
	done
fi
if [ "${#names[@]}" -eq 0 ]; then
	echo "run.sh: no benchmark was built" >&2
	exit 1
fi

sha=$(git rev-parse --short HEAD 2>/dev/null || echo nocommit)
dirty=""
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	dirty=" (working tree has uncommitted changes)"
fi
mkdir -p bench/results
out=bench/results/$(date +%Y-%m-%d)-$sha.txt
i=2
while [ -e "$out" ]; do
	out=bench/results/$(date +%Y-%m-%d)-$sha-$i.txt
	i=$((i + 1))
done
tmp=$out.tmp

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
{
	echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "commit:   $(git rev-parse HEAD 2>/dev/null || echo none)$dirty"
	echo "kernel:   $(uname -r)"
	echo "cpu:      ${cpu:-unknown} ($(nproc) online)"
	echo "compiler: $(cc --version | head -n 1)"
	echo "liburing: $(pkg-config --modversion liburing)"
	echo "build:    meson buildtype=release (build-bench/)"
} >"$tmp"

failed=0
for name in "${names[@]}"; do
	exe=build-bench/bench/$name
	if [ ! -x "$exe" ]; then
		echo "run.sh: no such benchmark: $name" | tee -a "$tmp" >&2
		failed=1
		continue
	fi
	printf '\n== %s\n' "$name" | tee -a "$tmp"
	"$exe" 2>&1 | tee -a "$tmp"
	rc=${PIPESTATUS[0]}
	if [ "$rc" -ne 0 ]; then
		echo "run.sh: $name exited with $rc" | tee -a "$tmp" >&2
		failed=1
	fi
done
mv "$tmp" "$out"
echo "results: $out"
exit "$failed"
