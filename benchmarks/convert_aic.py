"""Time `convert aic` on a raw file of AI Challenger train's size (378,000 persons), without --images.

The file is made by repeating the example file's entries under new image ids.
Run from the repo root: python -m benchmarks.convert_aic [--persons N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from posecli.data.aic import convert_aic, convert_aic_file, gc_paused, load_raw

EXAMPLE = Path(__file__).parent.parent / "tests" / "data" / "aic_raw" / "keypoint_annotations_example.json"
AIC_TRAIN_PERSONS = 378_000


def make_raw(persons: int) -> list[dict]:
    """Repeat the example's entries, each copy with a new image id, until exactly ``persons`` humans."""
    example = json.loads(EXAMPLE.read_text())
    raw, total, copy = [], 0, 0
    while total < persons:
        for entry in example:
            humans = list(entry["keypoint_annotations"])[: persons - total]
            if not humans:
                break
            raw.append({
                "url": entry["url"],
                "image_id": f"{entry['image_id']}_{copy}",
                "keypoint_annotations": {h: entry["keypoint_annotations"][h] for h in humans},
                "human_annotations": {h: entry["human_annotations"][h] for h in humans},
            })  # fmt: skip
            total += len(humans)
        copy += 1
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=AIC_TRAIN_PERSONS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw_path, out_path = Path(tmp) / "keypoint_train_annotations.json", Path(tmp) / "aic_train.json"
        raw_path.write_text(json.dumps(make_raw(args.persons)))
        wall, cpu = time.perf_counter(), time.process_time()
        summary = convert_aic_file(raw_path, out_path)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        size_mb = out_path.stat().st_size / 1e6

        # Where the time goes (a second run, the same steps one by one).
        with gc_paused():
            start = time.perf_counter()
            raw = load_raw(raw_path)
            read = time.perf_counter() - start
            coco, _ = convert_aic(raw)
            convert = time.perf_counter() - start - read
            json.dumps(coco)
            write = time.perf_counter() - start - read - convert
    print(f"{summary.persons:,} persons in {summary.images:,} images -> {size_mb:.0f} MB: "
          f"{wall:.2f} s wall, {cpu:.2f} s CPU ({summary.persons / wall:,.0f} persons/s)")  # fmt: skip
    print(f"  json.load {read:.2f} s, convert {convert:.2f} s, json.dumps {write:.2f} s")


if __name__ == "__main__":
    main()
