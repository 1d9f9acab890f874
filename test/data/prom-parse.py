#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# Parse a Prometheus text exposition (0.0.4) file with the reference
# client's parser and print one "name{labels} value" line per sample,
# sorted, labels in name order (values JSON-quoted). Exit 1 (with the reason) if the text does
# not parse or a family lacks HELP or TYPE. Debian's interpreter is named
# on purpose: python3-prometheus-client lives in its dist-packages.
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    out = []
    try:
        for fam in text_string_to_metric_families(text):
            if not fam.documentation:
                print(f"no HELP for {fam.name}", file=sys.stderr)
                return 1
            if fam.type not in ("counter", "gauge"):
                print(f"untyped family {fam.name}: {fam.type}", file=sys.stderr)
                return 1
            for s in fam.samples:
                labels = ",".join(
                    f"{k}={json.dumps(v)}" for k, v in sorted(s.labels.items()))
                out.append(f"{s.name}{{{labels}}} {s.value:g} {fam.type}")
    except ValueError as e:
        print(f"parse error: {e}", file=sys.stderr)
        return 1
    for line in sorted(out):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
