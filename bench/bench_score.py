"""Scoring throughput: `accelbench score`'s CLIP stage against the bound of the machine.

The bound is what decoding and preprocessing the PNGs (every core) and a bare open_clip forward on the same
images allow together: on a GPU they overlap, so the slower of the two; on a CPU they share the cores, so their
times add (1 / (1/decode + 1/forward)). Target: accelbench >= 0.9 x bound, the mean over ``--repeats``
measurements with a 95 % CI over them (none from fewer than five: NOT DECIDABLE). Test images follow NOTES.md's
method (smooth gradients with +-8 noise) so PNG sizes and decode costs are like real renders; the dataset is
written in accelbench's own format, so the scorer reads it exactly as it reads a generated one.

    python bench/bench_score.py --images 4096 --size 512 --device cuda --out bench/results/score.json
    python bench/bench_score.py --images 256 --model accelbench-tiny-clip --device cpu      # quick CPU check
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paired_stats import with_ci  # noqa: E402
from targets import as_json, at_least, print_targets, units  # noqa: E402

PROMPTS = [f"a photograph of object number {i} on a table" for i in range(64)]


def test_png(index: int, size: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(index)
    ramp = np.linspace(0, 255, size)
    pixels = np.stack([np.broadcast_to(ramp[None, :], (size, size)), np.broadcast_to(ramp[:, None], (size, size)),
                       np.full((size, size), 96.0 + index % 64)], axis=-1)
    pixels = np.clip(pixels + rng.integers(-8, 9, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


RATIO_LIMIT = 0.9  # accelbench's scoring throughput over the machine's bound


def write_dataset(directory: Path, pngs: list[bytes], size: int) -> None:
    """``pngs`` as a dataset of accelbench's own format, ready to score."""
    import pyarrow as pa

    from accelbench import dataset, schema

    dataset.init_dataset(directory, schema.dataset_manifest(
        suite="bench-score", weights="tiny", dtype_policy="float32", device_type="cpu", prompts_sha256="",
        seeds=[0], batch_sizes=[1], seed_key="", clip={"model": "ViT-B-32", "pretrained": "random"}, suite_facts={}))
    rows = [schema.empty_row(schema.GENERATION_COLUMNS) | {
        "record_id": f"img{index:07d}", "prompt": PROMPTS[index % len(PROMPTS)], "status": schema.STATUS_OK,
        "image": {"bytes": png, "path": None}, "height": size, "width": size, "variant": "baseline"}
        for index, png in enumerate(pngs)]
    table = pa.Table.from_pylist(rows, schema=schema.arrow_schema(schema.GENERATION_COLUMNS))
    dataset.write_table_atomic(table, directory / schema.GENERATIONS_DIR / f"{schema.SHARD_PREFIX}bench.parquet")


_preprocess = None


def _decode_chunk(args):
    """Decode + preprocess PNGs in a worker, as the scorer's DataLoader workers do; returns the count."""
    global _preprocess
    model, pngs = args
    if _preprocess is None:
        import open_clip
        import torch

        from accelbench.scorer import clip

        torch.set_num_threads(1)
        clip.register_configs()
        _preprocess = open_clip.create_model_and_transforms(model, pretrained=None)[2]
    from accelbench.scorer import images

    for png in pngs:
        _preprocess(images.open_rgb(png))
    return len(pngs)


def decode_rate(pngs, model: str, workers: int) -> float:
    """Images/s at which `workers` processes decode and preprocess (pool start and model set-up excluded)."""
    chunks = [(model, pngs[i:i + 64]) for i in range(0, len(pngs), 64)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_decode_chunk, [(model, pngs[:1])] * workers))  # start every worker, build its transforms
        start = time.perf_counter()
        done = sum(pool.map(_decode_chunk, chunks))
        return done / (time.perf_counter() - start)


def forward_rate(model: str, pretrained: str, device: str, batch_size: int, pngs) -> float:
    """Images/s of the bare open_clip image forward on preprocessed images already on the device."""
    import torch

    from accelbench.scorer import clip, images

    loaded = clip.load_clip(model, pretrained, device)
    batch = torch.stack([loaded.preprocess(images.open_rgb(png)) for png in pngs[:batch_size]])
    batch = batch.to(device)
    loaded.encode_images(batch)  # warm-up
    repeats = max(3, 2048 // batch_size) if device.startswith("cuda") else 3
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        loaded.encode_images(batch)  # returns numpy: synchronises
    return repeats * batch_size / (time.perf_counter() - start)


def bound(decode: float, forward: float, device: str) -> float:
    """Images/s the machine allows: decoding overlaps a GPU's forward, but shares a CPU's cores with it."""
    return 1 / (1 / decode + 1 / forward) if device == "cpu" else min(decode, forward)


def recorded_repeats(result: dict) -> list[dict]:
    """A result's measurements (results from before ``--repeats`` hold their one at the top level)."""
    return result.get("repeats", [result])


def score_target(ratios: list[float]):
    point, low, high = with_ci(lambda values, axis=-1: np.mean(values, axis=axis), ratios)
    return at_least(f"accelbench score >= {RATIO_LIMIT} x the machine's bound", RATIO_LIMIT, point, (low, high),
                    units(len(ratios), "repeat"), spec=".2f")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="random")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="measurements of bound and scorer (default 5)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats: at least 1")

    from accelbench.builder.host import environment
    from accelbench.scorer import clip

    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="bench-score-"))
    with ProcessPoolExecutor(cores) as pool:
        pngs = list(pool.map(test_png, range(args.images), [args.size] * args.images, chunksize=16))
    device_name, versions = environment(args.device)
    png_kib = sum(map(len, pngs)) / len(pngs) / 1024
    print(f"{device_name} ({cores} cores), {args.model}/{args.pretrained}, {args.images} PNGs of {args.size}² "
          f"({png_kib:.0f} KiB)")
    print(f"{'repeat':<8}{'decode+preprocess':>18}{'bare forward':>14}{'bound':>10}{'accelbench':>12}{'ratio':>8}"
          "  (img/s)")
    repeats = []
    for repeat in range(args.repeats):
        write_dataset(work / f"ds{repeat}", pngs, args.size)  # a fresh dataset: the scorer skips scored images
        decode = decode_rate(pngs, args.model, cores)
        forward = forward_rate(args.model, args.pretrained, args.device, args.batch_size, pngs)
        summary = clip.score_clip(work / f"ds{repeat}", args.model, args.pretrained, device=args.device,
                                  batch_size=args.batch_size, progress=False)
        limit = bound(decode, forward, args.device)
        repeats.append({"decode_preprocess_images_per_s": decode, "forward_images_per_s": forward,
                        "bound_images_per_s": limit, "accelbench_images_per_s": summary.images_per_s,
                        "ratio_to_bound": summary.images_per_s / limit, "accelbench_seconds_total": summary.seconds})
        print(f"{repeat + 1:<8}{decode:>18.1f}{forward:>14.1f}{limit:>10.1f}{summary.images_per_s:>12.1f}"
              f"{summary.images_per_s / limit:>8.2f}", flush=True)
    target = score_target([repeat["ratio_to_bound"] for repeat in repeats])
    result = {"date": date.today().isoformat(), "device": device_name, "cores": cores, "versions": versions,
              "device_type": args.device, "images": args.images, "size": args.size, "model": args.model,
              "pretrained": args.pretrained, "png_kib": png_kib, "repeats": repeats, "targets": as_json([target])}
    print_targets(f"scoring on {device_name} ({args.device})", [target])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
