"""Generate clean or drifted rows (+ true labels) for the example models, as JSON lines or CSV.

    python examples/models/generate.py -n 5 --task classification
    python examples/models/generate.py -n 1000 --shift amount=2 --label-noise 0.3 --format csv

Each JSON line is {"instances": [[...]], "label": y}: the body of a KServe V1 request plus the
ground truth to send as feedback later.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys

from modelwarden.sandbox import datagen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rows", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", choices=("classification", "regression"), default="classification")
    parser.add_argument(
        "--shift", action="append", default=[], metavar="FEATURE=K", help="shift a feature's mean by K std"
    )
    parser.add_argument("--label-noise", type=float, default=0.0)
    parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    args = parser.parse_args()
    shift = {name: float(k) for name, k in (item.split("=", 1) for item in args.shift)}
    drift = datagen.Drift(shift=shift, label_noise=args.label_noise)
    generate = datagen.classification if args.task == "classification" else datagen.regression
    x, y = generate(args.rows, args.seed, drift)
    if args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow([*datagen.FEATURE_NAMES, datagen.TARGET])
        writer.writerows([*row, label] for row, label in zip(x.tolist(), y.tolist()))
    else:
        for row, label in zip(x.tolist(), y.tolist()):
            print(json.dumps({"instances": [row], "label": label}))


if __name__ == "__main__":
    main()
