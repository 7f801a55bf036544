"""Train the example classifier and regressor into an output directory.

    python examples/models/train.py -o /tmp/models
    modelwarden serve --model /tmp/models/classifier --name fraud --version 1 --track stable

Writes <out>/classifier/ and <out>/regressor/, each with model.joblib, profile.json and train.csv.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from modelwarden.sandbox.examples import train_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("models"))
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bins", type=int, default=20)
    args = parser.parse_args()
    started = time.perf_counter()
    for kind, example in train_examples(args.output, rows=args.rows, seed=args.seed, bins=args.bins).items():
        print(f"{kind}: {example.model}, {example.profile}, {example.data}")
    print(f"trained in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
