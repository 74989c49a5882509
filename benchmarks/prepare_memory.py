#!/usr/bin/env python
"""Peak memory (RSS) and time of the prepare stage on N phantoms at a given size.

The raw phantoms are a few hundred generated ones repeated, each copy shifted so that no two rows are equal (prepare's
memory does not depend on what the pixels show, and generating 21,165 phantoms at 224 px takes minutes):
    python benchmarks/prepare_memory.py --n 21165 --size 224
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

RUN_PREPARE = """
import json, resource, sys, time
from pathlib import Path
from cxrmim.data.prepare import prepare
start = time.perf_counter()
summary = prepare(Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), Path(sys.argv[4]))
print(json.dumps({"seconds": time.perf_counter() - start, "n_images": summary["n_images"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=21165, help="images (the COVID-19 Radiography Database has 21,165)")
    parser.add_argument("--size", type=int, default=224, help="raw phantom size and prepare.image_size")
    parser.add_argument("--base", type=int, default=200, help="distinct phantoms generated and repeated")
    parser.add_argument("--workdir", type=Path, help="where to write (default: a temporary folder)")
    return parser.parse_args(argv)


def write_member(archive: zipfile.ZipFile, name: str, rows: int, base: np.ndarray) -> None:
    """Stream an (rows, S, S) uint8 .npy member into the npz: copy k of base row k % len(base), rolled by k."""
    header = {"descr": "|u1", "fortran_order": False, "shape": (rows, *base.shape[1:])}
    with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for k in range(rows):
            handle.write(np.roll(base[k % len(base)], k // len(base), axis=1).tobytes())


def write_phantoms(path: Path, n: int, size: int, base: int) -> None:
    """A phantoms.npz as the download stage writes it, without holding n images in memory."""
    from cxrmim.data.synthetic import PhantomSettings, generate_dataset

    data = generate_dataset(PhantomSettings.from_config({"n_images": base, "image_size": size, "seed": 0}))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        write_member(archive, "images", n, data["images"])
        write_member(archive, "masks", n, data["masks"])
        for key in ("labels", "reports", "patient_ids"):
            values = np.asarray([data[key][k % base] for k in range(n)])
            if key == "patient_ids":
                values = np.asarray([f"{v}-{k // base}" for k, v in enumerate(values)])
            with archive.open(f"{key}.npy", "w") as handle:
                np.lib.format.write_array(handle, values)


def main(argv: list[str] | None = None) -> None:
    """Write the phantoms, run prepare in a fresh process, print its peak RSS."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        folder = Path(folder)
        start = time.perf_counter()
        write_phantoms(folder / "phantoms.npz", args.n, args.size, args.base)
        print(f"wrote {args.n} phantoms of {args.size} px in {time.perf_counter() - start:.0f} s", flush=True)
        (folder / "source.json").write_text(json.dumps({"root": str(folder / "phantoms.npz")}))
        dataset = {"name": "bench", "kind": "synthetic"}
        settings = {"image_size": args.size, "on_bad_image": "skip", "workers": 1}
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                RUN_PREPARE,
                str(folder / "source.json"),
                json.dumps(dataset),
                json.dumps(settings),
                str(folder / "prepared"),
            ],
            capture_output=True,
            check=False,
            text=True,
        )
        if result.returncode:
            sys.exit(result.stderr[-4000:])
        stats = json.loads(result.stdout.strip().splitlines()[-1])
        cache_mb = 2 * args.n * args.size**2 / 2**20
        print(
            f"prepare: {stats['n_images']} images of {args.size} px in {stats['seconds']:.0f} s, peak RSS "
            f"{stats['peak_rss_mb']:.0f} MB (the cache itself is {cache_mb:.0f} MB on disk)"
        )


if __name__ == "__main__":
    main()
