"""Speed of the Selecting stage on a Llama-3.1-8B-size kva.h5 ([2850, 32, 4096] float32, 1.5 GB).

Times all four strategies of ``loki_pipeline.select.select_nodes`` (chunked ``np.partition``
counting) against a straightforward implementation on the same file in the same run: one
stable ``np.argsort`` per (prompt, layer), i.e. the upstream double loop without its min-max
normalisation. Both read the file chunk by chunk; the selections must be identical.

    python benchmarks/select_speed.py                      # full size (writes a 1.5 GB temp file)
    python benchmarks/select_speed.py --samples 300 --keep /tmp/kva_bench.h5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from loki_pipeline.kva.kva_file import iter_kva_chunks
from loki_pipeline.select import STRATEGIES, select_nodes
from loki_pipeline.select.naming import nodes_per_layer_quota


def write_synthetic_kva(path: Path, samples: int, layers: int, nodes: int, seed: int = 0) -> None:
    """Random attributions in the kva_gather layout (one HDF5 chunk per prompt)."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as fh:
        ds = fh.create_dataset(
            "attributions", shape=(samples, layers, nodes), dtype=np.float32,
            chunks=(1, layers, nodes),
        )  # fmt: skip
        for start in range(0, samples, 128):
            stop = min(samples, start + 128)
            block = rng.standard_normal((stop - start, layers, nodes), dtype=np.float32)
            block[:, :, ::97] = 0.0  # exact ties, as dead nodes give in real files
            ds[start:stop] = block
        fh.attrs.update(model="synthetic", num_layers=layers, d_model=nodes,
                        num_samples=samples, complete=True)  # fmt: skip


def straightforward_layer_balanced_low(path: Path, q: float) -> list[list[int]]:
    """The LoKI paper's steps 1-4 with one stable argsort per (prompt, layer)."""
    counts = None
    k = None
    for _, block in iter_kva_chunks(path, 128):
        n, layers, nodes = block.shape
        if counts is None:
            counts = np.zeros((layers, nodes), dtype=np.int64)
            k = nodes_per_layer_quota(q, nodes)
        for t in range(n):
            for layer in range(layers):
                counts[layer, np.argsort(block[t, layer], kind="stable")[:k]] += 1
    return [sorted(np.argsort(-c, kind="stable")[:k].tolist()) for c in counts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2850)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--nodes", type=int, default=4096)
    parser.add_argument("--q", type=float, default=10)
    parser.add_argument("--chunk-size", type=int, default=128)
    parser.add_argument("--keep", type=Path, help="write/reuse the synthetic file here")
    args = parser.parse_args()

    tmp = None
    if args.keep:
        path = args.keep
    else:
        tmp = tempfile.TemporaryDirectory(prefix="select_speed.", dir=".")
        path = Path(tmp.name) / "kva.h5"
    if not path.exists():
        t0 = time.perf_counter()
        write_synthetic_kva(path, args.samples, args.layers, args.nodes)
        print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
    with h5py.File(path, "r") as fh:
        shape = fh["attributions"].shape
    print(f"kva.h5 {shape}, {path.stat().st_size / 2**30:.2f} GiB, q = {args.q:g}")

    # Warm the page cache so that every timing reads the file from memory alike.
    for _ in iter_kva_chunks(path, args.chunk_size):
        pass

    rows = []
    results = {}
    for strategy in STRATEGIES:
        t0 = time.perf_counter()
        results[strategy] = select_nodes(path, args.q, strategy, chunk_size=args.chunk_size)
        rows.append((f"select_nodes {strategy}", time.perf_counter() - t0))
    t0 = time.perf_counter()
    reference = straightforward_layer_balanced_low(path, args.q)
    slow = time.perf_counter() - t0
    rows.append(("straightforward layer_balanced_low (argsort per prompt and layer)", slow))
    assert reference == results["layer_balanced_low"], "selections differ"

    print("\n| implementation | seconds | speed-up vs straightforward |\n|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {slow / seconds:.1f}x |")
    print("\nlayer_balanced_low selections identical: yes")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
