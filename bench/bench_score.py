"""Scoring throughput: `accelbench score`'s CLIP stage against the bound of the machine.

bound = min(bare open_clip forward on the same images, the rate at which all cores decode + preprocess
those PNGs); target: accelbench >= 0.9 x bound. Test images follow NOTES.md's method (smooth gradients with
+-8 noise) so PNG sizes and decode costs are like real renders; the dataset is written in accelbench's own
format, so the scorer reads it exactly as it reads a generated one.

    python bench/bench_score.py --images 4096 --size 512 --device cuda --out bench/results/score.json
    python bench/bench_score.py --images 256 --model accelbench-tiny-clip --device cpu      # quick CPU check
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np

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


def write_dataset(directory: Path, count: int, size: int, pool) -> list[bytes]:
    from accelbench import dataset, schema

    import pyarrow as pa

    pngs = list(pool.map(test_png, range(count), [size] * count, chunksize=16))
    dataset.init_dataset(directory, schema.dataset_manifest(
        suite="bench-score", weights="tiny", dtype_policy="float32", device_type="cpu", prompts_sha256="",
        seeds=[0], batch_sizes=[1], clip={"model": "ViT-B-32", "pretrained": "random"}, suite_facts={}))
    rows = [schema.empty_row(schema.GENERATION_COLUMNS) | {
        "record_id": f"img{index:07d}", "prompt": PROMPTS[index % len(PROMPTS)], "status": schema.STATUS_OK,
        "image": {"bytes": png, "path": None}, "height": size, "width": size, "variant": "baseline"}
        for index, png in enumerate(pngs)]
    table = pa.Table.from_pylist(rows, schema=schema.arrow_schema(schema.GENERATION_COLUMNS))
    dataset.write_table_atomic(table, directory / schema.GENERATIONS_DIR / f"{schema.SHARD_PREFIX}bench.parquet")
    return pngs


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="random")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from accelbench.builder.host import environment
    from accelbench.scorer import clip

    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="bench-score-"))
    with ProcessPoolExecutor(cores) as pool:
        pngs = write_dataset(work / "ds", args.images, args.size, pool)
    decode = decode_rate(pngs, args.model, cores)
    forward = forward_rate(args.model, args.pretrained, args.device, args.batch_size, pngs)
    summary = clip.score_clip(work / "ds", args.model, args.pretrained, device=args.device,
                              batch_size=args.batch_size, progress=False)
    bound = min(decode, forward)
    device_name, versions = environment(args.device)
    result = {"date": date.today().isoformat(), "device": device_name, "cores": cores, "versions": versions,
              "images": args.images, "size": args.size, "model": args.model, "pretrained": args.pretrained,
              "png_kib": sum(map(len, pngs)) / len(pngs) / 1024, "decode_preprocess_images_per_s": decode,
              "forward_images_per_s": forward, "bound_images_per_s": bound,
              "accelbench_images_per_s": summary.images_per_s, "ratio_to_bound": summary.images_per_s / bound,
              "accelbench_seconds_total": summary.seconds}
    print(f"{device_name} ({cores} cores), {args.model}/{args.pretrained}, {args.images} PNGs of {args.size}² "
          f"({result['png_kib']:.0f} KiB)")
    print(f"decode+preprocess, {cores} processes: {decode:9.1f} img/s")
    print(f"bare forward ({args.device}):        {forward:9.1f} img/s")
    print(f"accelbench score (CLIP):       {summary.images_per_s:9.1f} img/s = {result['ratio_to_bound']:.2f} x bound "
          f"({summary.seconds:.1f} s in all, model loading included)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
