"""Convert the MNIST IDX files (gzipped) to one NPZ of images, as a user would upload them:
`x_train` (60000x1x28x28 uint8), `y_train`, `x_test` (10000x1x28x28), `y_test`.

    .venv/bin/python -m bench.mnist_npz [--source ../shared/data/mnist] [--out mnist.npz]

For benchmarks only: the platform and its tests never need these files.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def read_idx(path: Path) -> np.ndarray:
    """An IDX file: a big-endian magic number, its dimensions, then the uint8 data."""
    data = gzip.decompress(path.read_bytes())
    magic = int.from_bytes(data[:4], "big")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    if magic not in (IMAGES_MAGIC, LABELS_MAGIC):
        raise ValueError(f"{path}: not an IDX file of images or labels (magic {magic})")
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    return array.reshape(shape)


def load_mnist(source: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(source / f"{prefix}-images.idx3-ubyte.gz")
        arrays[f"x_{split}"] = images[:, None, :, :]  # N x 1 x 28 x 28
        arrays[f"y_{split}"] = read_idx(source / f"{prefix}-labels.idx1-ubyte.gz").astype(np.int64)
    return arrays


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    parser.add_argument("--source", type=Path, default=default)
    parser.add_argument("--out", type=Path, default=Path("mnist.npz"))
    args = parser.parse_args()
    arrays = load_mnist(args.source)
    np.savez_compressed(args.out, **arrays)
    shapes = ", ".join(f"{name} {array.shape}" for name, array in arrays.items())
    print(f"wrote {args.out}: {shapes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
