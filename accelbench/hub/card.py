"""The dataset card (``README.md``) of a published dataset: a YAML header the Hub reads (configs, license, task
category, size, tags) and a body built from the dataset itself: what it holds, the tasks, models and methods,
how the images were generated and scored, the report's results, how to load it, every column, the caveats.

The configs are declared here, in the card's YAML header: that is what makes them configs on the Hub.
:mod:`accelbench.hub.stage` writes their files. huggingface_hub is imported inside :func:`build_card`.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from accelbench import schema
from accelbench.manifest import BASELINE_METHOD
from accelbench.manifest.summary import level_table
from accelbench.scorer import grids, leaderboard, leaderboard_files, leaderboard_markdown, markdown, report

GENERATIONS_CONFIG = "generations"
SCORES_CONFIG = "scores"  # the report's CLIP recipe; "scores-<recipe_id>" for every further recipe
FIDELITY_CONFIG = "fidelity"
SUMMARY_CONFIG = "summary"
LEADERBOARD_CONFIG = "leaderboard"
GATE_CONFIG = "gate"
CONFIG_COLUMNS = {GENERATIONS_CONFIG: schema.GENERATION_COLUMNS, SCORES_CONFIG: schema.SCORES_COLUMNS,
                  FIDELITY_CONFIG: schema.FIDELITY_COLUMNS, SUMMARY_CONFIG: schema.SUMMARY_COLUMNS,
                  GATE_CONFIG: schema.GATE_COLUMNS}
CONFIG_CONTENTS = {
    GENERATIONS_CONFIG: "one row per image: the image, its prompt, seed, settings, per-stage timings, environment",
    SCORES_CONFIG: "CLIP score of each image (the report's recipe), joined with its fidelity to the matched "
                   "baseline and to the same image at batch size 1",
    FIDELITY_CONFIG: "PSNR/SSIM of each image to the image it is compared with, as the scorer wrote it",
    SUMMARY_CONFIG: f"the report's summary table (`{schema.REPORT_DIR}/{report.SUMMARY_CSV}`): one row per task "
                    f"and variant, batch sizes pooled",
    LEADERBOARD_CONFIG: f"the leaderboard (`{schema.REPORT_DIR}/{leaderboard_files.LEADERBOARD_CSV}`): one row per "
                        f"submission, the GT first as the reference: correct tasks, fast_p, GT parity, geomean speedup",
    GATE_CONFIG: "the correctness gate's verdict on every submission program it judged before timing: checks, "
                 "the first failure, the trace digest and the random inputs",
}
OTHER_RECIPE_CONTENTS = "CLIP scores of another recipe, like `scores`"
LICENSE = "apache-2.0"  # prompts: PartiPrompts (Apache-2.0) or the suite's own; code: accelbench (Apache-2.0)
BASE_TAGS = ("diffusion", "benchmark", "acceleration", "text-to-image", "accelbench")
EXAMPLE_TEXTS = 3  # task texts and prompts quoted on the card
EXAMPLE_GRIDS = 3  # image grids embedded in the card


def build_card(*, repo_id: str, manifest: dict, facts: dict[str, dict], rows: list[dict], runs: list[dict],
               configs: dict[str, str], counts: dict[str, int], recipes: list[dict], summary: list[dict],
               staging_dir: Path, board: leaderboard.Leaderboard | None = None):
    """The ``huggingface_hub.DatasetCard`` of a staged dataset.

    ``facts``: the dataset's task facts (:func:`accelbench.task_facts.read`); ``rows``: the generation rows
    without images; ``runs``: the run records; ``configs``: config name ->
    data_files pattern and ``counts``: config name -> rows, the generations config first; ``recipes``: per CLIP
    recipe, ``{"config", "rows", "recipe"}`` (``recipe``: its recipe.json), the ``scores`` config's first;
    ``summary``: the report's pooled rows (SUMMARY_COLUMNS, typed), empty when unscored; ``staging_dir``: the
    staged folder, whose ``report/`` the card links to; ``board``: the report's leaderboard (datasets with
    submissions), whose table and definitions become the card's leaderboard section."""
    from huggingface_hub import DatasetCard, DatasetCardData

    suite = manifest["suite"]
    data = DatasetCardData(
        license=LICENSE, task_categories=["text-to-image"], size_categories=[_size_category(len(rows))],
        pretty_name=f"AccelBench: {suite} suite",
        tags=[*BASE_TAGS, *_method_tags(facts)], language=["en"],
        configs=[{"config_name": name, "data_files": [{"split": "train", "path": pattern}],
                  **({"default": True} if name == GENERATIONS_CONFIG else {})} for name, pattern in configs.items()],
    )
    prompt_source = _prompt_source(manifest)
    sections = [
        _intro_section(manifest, rows, configs, counts),
        _tasks_section(facts, rows),
        _models_methods_section(facts, rows),
        _generation_section(manifest, rows, runs, prompt_source),
        _scoring_section(recipes) if recipes else
        "## Scores\n\nNot scored: this dataset holds the images and timings only (published with --allow-unscored).",
        _leaderboard_section(board, staging_dir) if board is not None else "",
        _results_section(summary, staging_dir) if summary else "",
        _usage_section(repo_id, configs),
        _columns_section(configs, {LEADERBOARD_CONFIG: schema.leaderboard_columns(board.fast_p)}
                         if board is not None else {}),
        _caveats_section(manifest, facts, rows, recipes, summary),
        _license_section(rows, prompt_source),
    ]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(filter(None, sections)) + "\n")


def _doc(columns, name: str) -> str:
    return next(column.doc for column in columns if column.name == name)


def _size_category(rows: int) -> str:
    """The Hub's size_categories value for a row count."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M")]
    return next((label for bound, label in bounds if rows < bound), "10M<n<100M")


def _method_tags(facts: dict[str, dict]) -> list[str]:
    """Tags from the methods' display names: DeepCache -> deepcache, T-GATE -> t-gate, A+B -> both."""
    names = sorted({task["method"]["name"] for task in facts.values() if task["method"]["id"] != BASELINE_METHOD})
    return list(dict.fromkeys(part.strip().lower().replace(" ", "-") for name in names for part in name.split("+")))


def _intro_section(manifest, rows, configs, counts) -> str:
    suite = manifest["suite"]
    description = (manifest.get("suite_facts") or {}).get("description", "")
    tasks = {row["task_id"] for row in rows if row["task_id"]}
    failed = sum(row["status"] != schema.STATUS_OK for row in rows)
    table = markdown.table(
        ["config", "files", "rows", "contents"],
        [[f"`{name}`", f"`{pattern}`", counts[name], CONFIG_CONTENTS.get(name, OTHER_RECIPE_CONTENTS)]
         for name, pattern in configs.items()])
    return (f"# AccelBench: {suite} suite\n\n"
            f"Images, timings and quality scores of diffusion pipelines with and without training-free acceleration "
            f"methods, generated by accelbench from its `{suite}` suite"
            f"{f' ({description})' if description else ''}: {len(rows)} images of {len(tasks)} tasks, "
            f"{failed} of them failed (kept, with their status and error). Each accelerated image is paired with the "
            f"baseline image of the same model, scheduler, steps, prompt, seed and batch size.\n\n{table}")


def _tasks_section(facts, rows) -> str:
    tasks: dict[str, dict] = {}
    for row in rows:
        if row["task_id"] and row["task_id"] not in tasks:
            tasks[row["task_id"]] = row
    listing = markdown.table(
        ["task", "model", "scheduler", "steps", "method", "parameters"],
        [[f"`{task_id}`", row["model"], row["scheduler"], row["steps"], row["method"],
          ", ".join(f"{key}={value}" for key, value in json.loads(row["method_params"] or "{}").items())]
         for task_id, row in sorted(tasks.items())])
    # One example text per method, so the examples show the variety of requests.
    examples: dict[str, str] = {}
    for task_id, row in sorted(tasks.items()):
        text = (facts.get(task_id) or {}).get("text")
        if text and row["method"] not in examples:
            examples[row["method"]] = text
    quoted = "\n".join(f"- *{text}*" for text in list(examples.values())[:EXAMPLE_TEXTS])
    settings = {row["setting_id"] for row in rows}
    by_level = markdown.table(*level_table([facts[task_id] for task_id in sorted(tasks) if task_id in facts]))
    return ("## Tasks\n\n"
            "A task asks for one pipeline (model, scheduler, number of steps) accelerated by one method with given "
            "parameters, in words; the `gt` rows are images of the reference program that solves it. Tasks with the "
            f"same model, scheduler and steps share one `baseline` (no acceleration): here {len(settings)} "
            f"baseline setting(s) serve {len(tasks)} task(s).\n\n"
            + (f"Example task texts:\n\n{quoted}\n\n" if quoted else "")
            + f"By family, pipeline, method and level (L1 a pipeline, L2 one method, L3 a combination, L4 a speedup "
              f"target, L5 a latency target; a target task leaves the method to the program):\n\n{by_level}\n\n"
            + listing)


def _models_methods_section(facts, rows) -> str:
    sources: dict[str, set] = defaultdict(set)
    for row in rows:
        sources[row["model"]].add(row["model_source"] or "")
    models = {task["model"]["id"]: task["model"] for task in facts.values()}
    methods = {task["method"]["id"]: task["method"] for task in facts.values()}
    model_table = markdown.table(
        ["model", "name", "loaded from", "denoiser", "resolution"],
        [[f"`{model}`", (models.get(model) or {}).get("name") or "",
          ", ".join(f"`{source}`" for source in sorted(found) if source),
          (models.get(model) or {}).get("denoiser") or "",
          ", ".join(sorted({f"{row['width']}×{row['height']}" for row in rows if row["model"] == model}))]
         for model, found in sorted(sources.items())])
    versions = markdown.versions(rows)
    method_rows = []
    for method in sorted({row["method"] for row in rows}):
        entry = methods.get(method) or {}
        library = entry.get("library")
        method_rows.append([f"`{method}`", entry.get("name") or "", library or "",
                            ", ".join(versions.get(library, ())) if library else ""])
    return (f"## Models and methods\n\n{model_table}\n\n"
            + markdown.table(["method", "name", "library", "version"], method_rows))


def _prompt_source(manifest: dict) -> str:
    """Where the prompts came from, as words (empty for a dataset that did not record it)."""
    prompts = (manifest.get("suite_facts") or {}).get("prompts") or {}
    kind = prompts.get("kind")
    licence = f", licence {prompts['license']}" if prompts.get("license") else ""
    if kind == "hub":
        return (f"the Hub dataset [`{prompts['name']}`](https://huggingface.co/datasets/{prompts['name']}) "
                f"(column `{prompts.get('column')}`, in order{licence})")
    where = {"suite-file": f"the suite's prompt file `{prompts.get('name')}`", "inline": "the suite manifest",
             "command-line": "a prompt file given on the command line"}.get(kind, "")
    return f"{where} ({licence[2:]})" if where and licence else where


def _generation_section(manifest, rows, runs, prompt_source) -> str:
    def values(name, found=None):
        found = {row[name] for row in rows if row[name] is not None} if found is None else found
        return ", ".join(str(value) for value in sorted(found)) or "?"

    prompts = sorted({(row["prompt_index"], row["prompt"]) for row in rows})
    examples = "\n".join(f"  - {prompt}" for _, prompt in prompts[:EXAMPLE_TEXTS])
    stages = ", ".join(f"`{name}` ({_doc(schema.GENERATION_COLUMNS, name)})"
                       for name in ("text_encode_s", "denoise_s", "vae_decode_s", "postprocess_s"))
    world_sizes = values("world_size", {run["world_size"] for run in runs if run.get("world_size")})
    hours = sum(float(run.get("seconds") or 0) for run in runs) / 3600
    return (
        "## How the images were generated\n\n"
        f"- **Prompts**: {len(prompts)}{f', from {prompt_source}' if prompt_source else ''}, e.g.\n{examples}\n"
        f"- **Seeds**: suite seed(s) {values('seed')}; every image has its own `torch.Generator` on "
        f"`{values('generator_device')}`, seeded from (seed, prompt index), so its initial noise does not depend on "
        f"the batch size, its position in the batch or what ran before. Global RNGs are reset before every program "
        f"load and every call, and each program is loaded fresh.\n"
        f"- **Batch sizes**: {values('batch_size')}, each with {values('warmup_batches')} untimed warm-up batch(es) "
        f"before the first timed batch; warm-up images are never recorded.\n"
        f"- **Timing**: timer `{values('timer')}` (one of: {_doc(schema.GENERATION_COLUMNS, 'timer')}). "
        f"`batch_latency_s`: {_doc(schema.GENERATION_COLUMNS, 'batch_latency_s')}; stages: {stages}. "
        f"`peak_memory_bytes`: {_doc(schema.GENERATION_COLUMNS, 'peak_memory_bytes')}.\n"
        f"- **Hardware**: {values('device_name')} (device {values('device')})"
        + (f"; {len(runs)} run record(s) (one per run and rank, world size {world_sizes}), {hours:.2f} h of "
           f"generate time (summed over ranks)" if runs else "") + ".\n"
        f"- **Weights**: `{manifest.get('weights')}` ({_doc(schema.GENERATION_COLUMNS, 'weights')}); "
        f"dtype {values('dtype')} (suite policy `{manifest.get('dtype_policy')}`).\n"
        f"- **Programs**: the source of every program is in `{schema.PROGRAMS_DIR}/<program_sha256>.py`; each run's "
        f"command line, environment and counts are in `{schema.RUNS_DIR}/`.\n\n"
        f"Library versions:\n\n{markdown.versions_table(rows)}")


def _scoring_section(recipes) -> str:
    shown = ("recipe_id", "clip_model", "clip_pretrained", "clip_preprocess")
    recipe_table = markdown.table(
        ["config", "recipe_id", "CLIP model", "pretrained", "preprocessing", "rows"],
        [[f"`{r['config']}`", f"`{r['recipe'].get('recipe_id')}`", *(r["recipe"].get(key) for key in shown[1:]),
          r["rows"]] for r in recipes])
    # recipe.json's further fields (score formula, text handling, open_clip version, notes), the table's omitted.
    recorded = "\n".join(f"- `{r['config']}`: " + "; ".join(f"{key}: {value}" for key, value in r["recipe"].items()
                                                            if key not in shown and value not in ("", None))
                         for r in recipes if set(r["recipe"]) - set(shown))
    s = schema.SUMMARY_COLUMNS
    return (
        "## How the scores were computed\n\n"
        f"- **CLIP score** (open_clip): {_doc(schema.CLIP_SCORE_COLUMNS, 'clip_score')}. Recipes (model, "
        f"pretrained weights, clamping) differ between papers, so every score row names its recipe (below).\n"
        f"- **Fidelity**: PSNR ({_doc(schema.FIDELITY_COLUMNS, 'psnr')}) and SSIM "
        f"({_doc(schema.FIDELITY_COLUMNS, 'ssim')}) of each image to the matched baseline image (same model, "
        f"scheduler, steps, prompt, seed, batch size); batch-size drift compares an image with the same image "
        f"generated at batch size 1.\n"
        f"- **Speedup**: {_doc(s, 'speedup')}; **denoise speedup**: the same for `denoise_s` alone.\n"
        f"- **Quality loss**: {_doc(s, 'quality_loss')} (positive: the accelerated images score lower).\n"
        f"- **Confidence intervals**: 95 % paired bootstrap CIs (`*_ci_low`, `*_ci_high`) of speedup, denoise "
        f"speedup, CLIP score, quality loss, PSNR and SSIM.\n"
        f"- **Flags**: {_doc(s, 'flags')}.\n\n"
        f"CLIP recipes:\n\n{recipe_table}"
        + (f"\n\nMore from each recipe's `recipe.json` (beside its config's data):\n\n{recorded}" if recorded
           else ""))


def _results_section(summary, staging_dir) -> str:
    table = markdown.table(
        ["task", "variant", "method", "images (failed)", "ms/image", "speedup [95 % CI]", "denoise speedup", "CLIP",
         "quality loss [95 % CI]", "PSNR dB", "SSIM", "flags"],
        [[f"`{row['task_id']}`", row["variant"], row["method"], f"{row['images']} ({row['failed']})",
          markdown.number(row["median_image_latency_s"], 1, scale=1000.0),
          markdown.with_ci(row, "speedup", suffix="×"), markdown.with_ci(row, "denoise_speedup", suffix="×"),
          markdown.with_ci(row, "clip_score"), markdown.with_ci(row, "quality_loss", suffix=" %", scale=100.0),
          markdown.with_ci(row, "psnr", 1), markdown.with_ci(row, "ssim", 3), row["flags"].replace(";", ", ")]
         for row in summary])
    hardware = sorted({row["device_name"] for row in summary if row["device_name"]})
    folder = staging_dir / schema.REPORT_DIR
    files = [f"[{path.name}]({schema.REPORT_DIR}/{path.name})" for path in sorted(folder.iterdir()) if path.is_file()]
    pareto = f"{schema.REPORT_DIR}/{report.PARETO_PNG}"
    grid_folder = f"{schema.REPORT_DIR}/{grids.GRIDS_DIR}"
    shown = sorted(grids.read_index(staging_dir)["tasks"].items())[:EXAMPLE_GRIDS]
    grid_images = "".join(f"\n\n![{task_id}: baseline, GT and submissions]({grid_folder}/{entry['file']})"
                          for task_id, entry in shown)
    return ("## Results\n\n"
            f"From `{schema.REPORT_DIR}/{report.SUMMARY_CSV}` (batch sizes pooled; timings on "
            f"{', '.join(hardware) or '?'}). Per batch size and in full: {', '.join(files)}.\n\n{table}"
            + (f"\n\n![speedup vs quality]({pareto})" if (staging_dir / pareto).is_file() else "")
            + (f"\n\nImage grids (`{grid_folder}/`, every task; a few here): each row a prompt and seed, the columns "
               f"baseline, GT and each submission with its CLIP score and PSNR to the baseline; below each image its "
               f"difference to the baseline, amplified.{grid_images}" if shown else ""))


def _usage_section(repo_id, configs) -> str:
    lines = ["from datasets import load_dataset", "",
             f'generations = load_dataset("{repo_id}", "{GENERATIONS_CONFIG}", split="train")',
             'generations[0]["image"]  # a PIL image; add streaming=True to read rows without downloading them all']
    if SCORES_CONFIG in configs:
        lines += ["", f'scores = load_dataset("{repo_id}", "{SCORES_CONFIG}", split="train").to_pandas()  # no images',
                  'scores[scores.variant == "gt"].groupby("task_id")[["clip_score", "psnr", "ssim"]].mean()']
    if LEADERBOARD_CONFIG in configs:
        lines += ["", f'board = load_dataset("{repo_id}", "{LEADERBOARD_CONFIG}", split="train").to_pandas()',
                  'board[["submission", "correct", "tasks", "fast_1", "gt_parity", "geomean_speedup"]]']
    code = "\n".join(lines)
    return ("## How to use it\n\n```python\n" + code + "\n```\n\n"
            "Every config has one split, `train`, and every table the column `record_id` to join on. Images are "
            f"lossless PNG; `image_sha256` identifies identical pixels, and `{schema.PROGRAMS_DIR}/` holds the code of "
            f"every row.")


def _leaderboard_section(board: leaderboard.Leaderboard, staging_dir: Path) -> str:
    """The report's leaderboard table, definitions and plots (images linked from the staged report/)."""
    present = all((staging_dir / schema.REPORT_DIR / name).is_file()
                  for name in (leaderboard_files.FAST_P_PNG, leaderboard_files.HEATMAP_PNG))
    return leaderboard_markdown.markdown_section(board, images=present, image_dir=f"{schema.REPORT_DIR}/").rstrip()


def _columns_section(configs, extra: dict | None = None) -> str:
    blocks = []
    for name, columns in {**CONFIG_COLUMNS, **(extra or {})}.items():
        if name not in configs:
            continue
        listing = markdown.table(["column", "type", "meaning"],
                                 [[f"`{c.name}`", "image" if c.hf == "image" else str(c.type),
                                   c.doc or "95 % CI bound of the column above"] for c in columns])
        blocks.append(f"<details><summary><code>{name}</code></summary>\n\n{listing}\n\n</details>")
    return "## Columns\n\n" + "\n\n".join(blocks)


def _caveats_section(manifest, facts, rows, recipes, summary) -> str:
    libraries = {task["method"].get("library") for task in facts.values()}
    denoisers = {task["model"].get("denoiser") for task in facts.values()}
    statuses = Counter(row["status"] for row in rows)
    no_ops = sorted({row["task_id"] for row in summary if "no-op" in row["flags"].split(";")})
    caveats = markdown.weights_caveats({row["weights"] for row in rows if row["weights"]} or {manifest.get("weights")})
    caveats += markdown.clip_caveats([recipe["recipe"] for recipe in recipes])
    caveats += markdown.interval_caveats(summary)
    if len({row["batch_size"] for row in rows}) > 1:
        caveats.append("Each image's initial noise is the same at every batch size, yet results drift numerically "
                       "with the batch size (visibly on GPUs in float16, where other kernels are chosen). Compare "
                       "images at the same batch size; `drift_psnr` in `scores` measures the drift.")
    if "tgate" in libraries:
        caveats.append("T-GATE patches every attention module of the pipeline for good (it has no unload), so a "
                       "pipeline used with T-GATE must not be reused without it. Here every program is loaded "
                       "fresh, so no row is affected.")
    if {"DeepCache", "tomesd"} & libraries and "transformer" in denoisers:
        caveats.append("DeepCache and ToMe patch UNets only: transformer (PixArt) pipelines have no tasks with them.")
    if no_ops:
        caveats.append(f"The report flags {', '.join(f'`{task}`' for task in no_ops)} as `no-op`: the accelerated "
                       f"images are bit-identical to the baseline (e.g. ToMe on SDXL at `max_downsample=1` patches "
                       f"no layer that runs), so any speedup there is noise.")
    if statuses.get(schema.STATUS_OK, 0) != len(rows):
        failed = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items())
                           if status != schema.STATUS_OK)
        caveats.append(f"Not every image was generated ({failed}): such rows have no image, keep their `status` "
                       f"and `error`, and are left out of the scores.")
    caveats.append("Timings hold for the hardware and library versions above; speedups of the same method vary "
                   "with both, and with the batch size.")
    return "## Caveats\n\n" + "\n".join(f"- {text}" for text in caveats)


def _license_section(rows, prompt_source) -> str:
    sources = sorted({row["model_source"] for row in rows if row["model_source"] and "/" in row["model_source"]
                      and not row["model_source"].startswith("/")})
    models = f" ({', '.join(f'`{source}`' for source in sources)})" if sources else ""
    prompts = f" The prompts come from {prompt_source}." if prompt_source else ""
    if prompt_source and "licence" not in prompt_source:
        prompts += " Their licence is not recorded: see their source's."
    return ("## License\n\n"
            f"Apache-2.0, like accelbench and PartiPrompts, the benchmark's prompt set.{prompts} Images made with "
            f"pretrained weights are also subject to the licence of the model that produced them{models}.")
