#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Install what is missing, build, run the whole test suite (plus the unit
# tests under ASan+UBSan) and end with one line: "N passed, N failed".
#
# Environment: RINGPROT_NO_ASAN=1 skips the sanitizer build.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || exit 1
cd "$root" || exit 1

# testlog.json files this run produced, and failures outside them.
logs=()
extra_passed=0
extra_failed=0

# Print the closing lines from every testlog.json in logs[] and exit.
finish() {
	python3 - "$extra_passed" "$extra_failed" "${logs[@]}" <<'EOF'
import json
import sys

PASS = {"OK", "EXPECTEDFAIL"}
passed, failed, skipped = int(sys.argv[1]), int(sys.argv[2]), 0
for path in sys.argv[3:]:
    p = f = s = 0
    with open(path) as log:
        for line in log:
            line = line.strip()
            if not line:
                continue
            test = json.loads(line)
            result = test.get("result")
            if result in PASS:
                p += 1
            elif result == "SKIP":
                s += 1
            else:
                # FAIL, TIMEOUT, UNEXPECTEDPASS, ERROR, or anything new.
                f += 1
                print(f"failed: {test.get('name')} ({result})")
    print(f"{path}: {p} passed, {f} failed, {s} skipped")
    passed, failed, skipped = passed + p, failed + f, skipped + s
print(f"{skipped} skipped")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
EOF
	exit $?
}

build_failed() {
	echo "test.sh: $*" >&2
	echo "0 passed, 1 failed"
	exit 1
}

# Configure (or reconfigure) build dir $1 with options $2...
setup() {
	local dir=$1
	shift
	if [ -f "$dir/meson-private/coredata.dat" ]; then
		meson setup --reconfigure "$dir" "$@" ||
			meson setup --wipe "$dir" "$@"
	else
		meson setup "$dir" "$@"
	fi
}

# Run meson test in build dir $1 with extra args $2...; record its log.
run_tests() {
	local dir=$1 log=$1/meson-logs/testlog.json rc
	shift
	rm -f "$log"
	meson test -C "$dir" --print-errorlogs "$@"
	rc=$?
	if [ -f "$log" ]; then
		logs+=("$log")
	elif [ "$rc" -ne 0 ]; then
		echo "test.sh: meson test in $dir failed ($rc) without a log" >&2
		extra_failed=$((extra_failed + 1))
	fi
}

bash "$root/scripts/deps.sh" || build_failed "installing dependencies failed"

setup build || build_failed "meson setup build failed"
meson compile -C build || build_failed "build failed"
run_tests build

# STYLE.md: warnings are errors with clang too. The build (benchmarks
# included) counts as one test; its unit tests run on every engine too,
# so both compilers' code is proven on io_uring and on epoll.
if command -v clang >/dev/null 2>&1; then
	if CC=clang setup build-clang -Dbench=true &&
		meson compile -C build-clang; then
		echo "test.sh: clang build (warnings as errors) passed"
		extra_passed=$((extra_passed + 1))
		run_tests build-clang --no-suite integration
	else
		echo "test.sh: the clang build failed" >&2
		echo "failed: clang-build"
		extra_failed=$((extra_failed + 1))
	fi
fi

if [ "${RINGPROT_NO_ASAN:-0}" != 1 ]; then
	# Unit tests only; benchmarks are not built. Sanitizers slow things.
	if setup build-asan -Db_sanitize=address,undefined -Db_lundef=false \
		-Dbench=false && meson compile -C build-asan; then
		run_tests build-asan --no-suite integration \
			--timeout-multiplier 3
	else
		echo "test.sh: the ASan+UBSan build failed" >&2
		extra_failed=$((extra_failed + 1))
	fi
fi

finish
