"""The ``accelbench`` command: one click group over the library. Commands only parse arguments and call it.

Torch, diffusers and the scorer's models are imported inside the commands that need them, so ``--help``,
``tasks`` and ``validate`` start fast.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from accelbench.errors import UserInputError
from accelbench.manifest import load_catalog

EXIT_FAILED = 1  # the command ran and found failures (failed rows, a program that fails the gate)
EXIT_BAD_INPUT = 2  # bad input: nothing was run, nothing written


class UserError(UserInputError):
    """Bad command-line input found by a command itself."""


class Group(click.Group):
    """Known errors become one ``error: ...`` line and exit code 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as error:
            if isinstance(error, UserInputError):
                click.echo(f"error: {error}", err=True)
                ctx.exit(EXIT_BAD_INPUT)
            raise


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--manifests", type=click.Path(file_okay=False, path_type=Path), envvar="ACCELBENCH_MANIFESTS",
              help="Manifest root to use instead of the packaged one (env ACCELBENCH_MANIFESTS).")
@click.version_option(package_name="accelbench")
@click.pass_context
def main(ctx, manifests):
    """Benchmark diffusion-pipeline acceleration: tasks, programs, generation, scoring, publishing."""
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    ctx.obj = {"manifests": manifests}


def _catalog(ctx):
    return load_catalog(ctx.obj["manifests"])


# ---------------------------------------------------------------------------------------------------------
# Tasks and manifests
# ---------------------------------------------------------------------------------------------------------


@main.command()
@click.option("--suite", help="Only the tasks of this suite.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@click.pass_context
def tasks(ctx, suite, as_json):
    """List the task catalogue."""
    catalog = _catalog(ctx)
    selected = catalog.suite(suite).tasks if suite else tuple(catalog.tasks)
    for task_id in selected:
        task = catalog.tasks[task_id]
        if as_json:
            click.echo(json.dumps(task.to_dict(), ensure_ascii=False))
        else:
            params = " ".join(f"{name}={value}" for name, value in task.params.items())
            click.echo(f"{task.id:<40} {task.model:<13} {task.scheduler:<9} {task.steps:>3}  {task.method:<16}"
                       f" {params}")
    if not as_json:
        click.echo(f"{len(selected)} tasks", err=True)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.pass_context
def validate(ctx, paths):
    """Validate manifests: the active root, other roots (folders with models.yaml) and task/suite files.

    Errors are one line (file: key: problem), exit code 2."""
    roots = [path for path in paths if path.is_dir()]
    files = [path for path in paths if path.is_file()]
    for root in roots or ([] if files else [ctx.obj["manifests"]]):
        catalog = load_catalog(root)
        click.echo(f"ok: {catalog.root}: {len(catalog.models)} models, {len(catalog.methods)} methods, "
                   f"{len(catalog.schedulers)} schedulers, {len(catalog.tasks)} tasks, {len(catalog.suites)} suites")
    if files:
        catalog = load_catalog(ctx.obj["manifests"], extra_files=files)
        click.echo(f"ok: {', '.join(map(str, files))} (with {catalog.root}: {len(catalog.tasks)} tasks, "
                   f"{len(catalog.suites)} suites)")


@main.command("gt-code")
@click.argument("task_id")
@click.option("--variant", type=click.Choice(["gt", "baseline"]), default="gt", show_default=True)
@click.pass_context
def gt_code(ctx, task_id, variant):
    """Print the ground-truth (or baseline) program of a task."""
    from accelbench.builder import programs

    catalog = _catalog(ctx)
    click.echo(programs.render(catalog, catalog.task(task_id), variant).source, nl=False)


@main.command("check-program")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--task", "task_id", required=True, help="Task the program claims to solve.")
@click.option("--model", "model_path", help="Model folder or Hub id (default: the family's tiny synthetic model).")
@click.option("--variant", type=click.Choice(["gt", "baseline"]), default="gt", show_default=True,
              help="baseline: a program without acceleration (skips the not-a-no-op check).")
@click.option("--resolution", type=int, help="Image size to ask for (default: tiny model's, else the model's).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@click.pass_context
def check_program(ctx, file, task_id, model_path, variant, resolution, device, as_json):
    """Run the correctness gate on a pipeline program; exit 0 only if it passes."""
    from accelbench.builder import gate, programs, synthetic

    catalog = _catalog(ctx)
    task = catalog.task(task_id)
    source = programs.read_program(file)
    if model_path is None:
        model_path = synthetic.materialize(task.model, "tiny")
        resolution = resolution or synthetic.tiny_resolution(task.model)
    resolution = resolution or catalog.models[task.model].resolution
    verdict = gate.check_program(source, task, catalog, model_path, height=resolution, width=resolution,
                                 variant=variant, device=device)
    click.echo(json.dumps(verdict.to_dict(), indent=2, default=str) if as_json else verdict.format())
    ctx.exit(0 if verdict.passed else EXIT_FAILED)


# ---------------------------------------------------------------------------------------------------------
# Generate
# ---------------------------------------------------------------------------------------------------------


def _split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


@main.command()
@click.option("--suite", "suite_id", default="smoke", show_default=True, help="Suite to generate.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Dataset folder.")
@click.option("--tasks", "task_patterns", help="Comma-separated task ids or glob patterns (default: the suite's).")
@click.option("--variants", default="baseline,gt", show_default=True, help="Comma-separated: baseline, gt.")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N prompts.")
@click.option("--device", help="cuda, cuda:N or cpu (default: cuda if available).")
@click.option("--weights", type=click.Choice(["pretrained", "random", "tiny"]),
              help="pretrained: real checkpoints; random: full-size architectures, random weights (timing only); "
                   "tiny: tiny synthetic models. Default: the suite's.")
@click.option("--shard", help="I/N: run shard I of N by hand (default: RANK/WORLD_SIZE from torchrun/accelerate).")
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Prompt file (.txt lines, or .tsv/.csv with a Prompt column) instead of the suite's.")
@click.option("--warmup", type=click.IntRange(min=0), help="Warm-up batches per batch size (default: the suite's).")
@click.option("--model", "model_paths", multiple=True, metavar="FAMILY=PATH",
              help="Load FAMILY's pretrained weights from a local folder (repeatable).")
@click.option("--encode-workers", type=click.IntRange(min=1), help="PNG encoding processes (default: CPU count).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
def generate(ctx, suite_id, out, task_patterns, variants, limit, device, weights, shard, prompts_file, warmup,
             model_paths, encode_workers, no_progress):
    """Render every (task, variant, seed, batch size) of a suite into a resumable Parquet dataset."""
    from accelbench.builder import plan, runner

    overrides = {}
    for item in model_paths:
        family, sep, path = item.partition("=")
        if not sep or not path:
            raise UserError(f"--model takes FAMILY=PATH, got {item!r}")
        overrides[family] = path
    options = runner.GenerateOptions(
        suite=suite_id, out=out, tasks=_split(task_patterns), variants=tuple(_split(variants) or ()), limit=limit,
        device=device, weights=weights, shard=plan.parse_shard(shard) if shard else None, prompts_file=prompts_file,
        warmup_batches=warmup, model_paths=overrides, manifests=ctx.obj["manifests"], encode_workers=encode_workers,
        progress=not no_progress,
    )
    summary = runner.run_generate(options)
    click.echo(summary.format())
    ctx.exit(EXIT_FAILED if summary.failed_rows else 0)


# ---------------------------------------------------------------------------------------------------------
# Score, report, publish
# ---------------------------------------------------------------------------------------------------------


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--clip-model", help="open_clip model name (default: the suite's, e.g. ViT-B-32).")
@click.option("--clip-pretrained", help="open_clip pretrained tag, or 'random' (default: the suite's).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Images per CLIP batch.")
@click.option("--workers", type=click.IntRange(min=0), help="Image decoding processes (default: CPU count).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
def score(ctx, directory, clip_model, clip_pretrained, device, batch_size, workers, no_progress):
    """CLIP scores, fidelity to the baseline and the report, offline from a generated dataset.

    Incremental: images already scored with the same recipe are skipped; another recipe is stored beside it."""
    from accelbench.scorer.score import score_dataset

    summary = score_dataset(directory, clip_model, clip_pretrained, device=device, batch_size=batch_size,
                            num_workers=workers, progress=not no_progress, manifests=ctx.obj["manifests"])
    click.echo(summary.format())


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--recipe", "recipe_id", help="CLIP recipe id to report (default: the only or the suite's one).")
@click.pass_context
def report(ctx, directory, recipe_id):
    """Rebuild DIR/report (summary.json/.csv, report.md, pareto.png) from the stored scores alone."""
    from accelbench.scorer.report import REPORT_MD, build_report

    built = build_report(directory, recipe_id=recipe_id, manifests=ctx.obj["manifests"])
    click.echo(f"report: {built.folder / REPORT_MD} ({len(built.pooled)} task x variant rows)")
    for note in built.notes:
        click.echo(f"note: {note}")


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--repo-id", required=True, help="Hub dataset repository, ORG/NAME.")
@click.option("--private", is_flag=True, help="Create the repository private.")
@click.option("--revision", help="Branch to push to (created if missing).")
@click.option("--dry-run", "staging_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Only stage the Hub-ready folder here; upload nothing.")
@click.option("--allow-unscored", is_flag=True, help="Publish generations without scores.")
@click.pass_context
def publish(ctx, directory, repo_id, private, revision, staging_dir, allow_unscored):
    """Publish a dataset to the Hugging Face Hub with a dataset card (token: HF_TOKEN or a cached login)."""
    from accelbench.scorer import publish as hub

    if staging_dir is not None:
        staged = hub.stage(directory, staging_dir, repo_id, allow_unscored=allow_unscored,
                           manifests=ctx.obj["manifests"])
        click.echo(staged.format())
        return
    url = hub.publish(directory, repo_id, private=private, revision=revision, allow_unscored=allow_unscored,
                      manifests=ctx.obj["manifests"])
    click.echo(f"published {url}")
