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

from accelbench import __version__, schema
from accelbench.builder.audit import DEFAULT_AUDIT_FRACTION
from accelbench.builder.isolation import SANDBOXES  # no torch at import
from accelbench.builder.options import GATE_MODES
from accelbench.builder.worker import DEFAULT_LOAD_TIMEOUT_S, DEFAULT_WARMUP_TIMEOUT_S
from accelbench.errors import RunError, UserInputError
from accelbench.manifest import LEVELS, WEIGHTS_MODES, load_catalog, unknown_name

EXIT_FAILED = 1  # the command ran and found failures (failed rows, a program that fails the gate)
EXIT_BAD_INPUT = 2  # bad input: nothing was run, nothing written


class UserError(UserInputError):
    """Bad command-line input found by a command itself."""


class Group(click.Group):
    """Known errors become one ``error: ...`` line, never a traceback or a usage block: bad input (click's own
    argument errors included) exits 2, a run stopped by its environment exits 1."""

    def main(self, *args, **kwargs):
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as error:
            click.echo(f"error: {error.format_message()}", err=True)
            sys.exit(EXIT_BAD_INPUT if isinstance(error, click.UsageError) else error.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserInputError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except RunError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(EXIT_FAILED)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--manifests", type=click.Path(file_okay=False, path_type=Path), envvar="ACCELBENCH_MANIFESTS",
              help="Manifest root to use instead of the packaged one (env ACCELBENCH_MANIFESTS).")
@click.version_option(version=__version__, package_name="accelbench")
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


TASKS_HELP = ("Comma-separated task ids or glob patterns, '!PATTERN' dropping what it matches of those before it "
              "(default: the suite's).")


@main.command()
@click.option("--suite", help="Only the tasks of this suite.")
@click.option("--level", "levels", type=click.IntRange(min(LEVELS), max(LEVELS)), multiple=True,
              help="Only the tasks of this level (repeatable): " + "; ".join(f"{level}: {meaning}"
                                                                             for level, meaning in LEVELS.items()))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@click.option("--summary", is_flag=True,
              help="Task counts per (family, pipeline, method) and level as a Markdown table, then the methods that "
                   "do not apply to a family and why.")
@click.pass_context
def tasks(ctx, suite, levels, as_json, summary):
    """List the task catalogue: id, model, sampler, steps, level (and tags), method and parameters."""
    catalog = _catalog(ctx)
    selected = [task_id for task_id in (catalog.suite(suite).tasks if suite else tuple(catalog.tasks))
                if not levels or catalog.tasks[task_id].level in levels]
    if summary:
        from accelbench.manifest import summary as catalogue_summary
        from accelbench.scorer.markdown import table

        click.echo(table(*catalogue_summary.level_table(catalogue_summary.catalogue_facts(catalog, selected))))
        click.echo("\nNot applicable:\n" + "\n".join(f"- {line}" for line in catalogue_summary.not_applicable(catalog)))
        return
    for task_id in selected:
        task = catalog.tasks[task_id]
        if as_json:
            click.echo(json.dumps(task.to_dict(), ensure_ascii=False))
        else:
            params = " ".join(f"{name}={value}" for name, value in task.params.items())
            level = f"L{task.level}" + "".join(f",{tag}" for tag in task.tags)
            click.echo(f"{task.id:<40} {task.model:<13} {task.scheduler:<9} {task.steps:>3}  {level:<9}"
                       f"{task.method:<16} {params}")
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
@click.option("--baseline", is_flag=True, help="Print the baseline program of the task's setting instead.")
@click.pass_context
def gt_code(ctx, task_id, baseline):
    """Print the ground-truth (or baseline) program of a task."""
    from accelbench.builder import programs

    catalog = _catalog(ctx)
    click.echo(programs.render(catalog, catalog.task(task_id), baseline=baseline).source, nl=False)


@main.command("task-pack")
@click.option("--suite", "suite_id", required=True, help="Suite whose tasks to pack.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New (or empty) folder to write.")
@click.option("--tasks", "task_patterns", help=TASKS_HELP)
@click.pass_context
def task_pack(ctx, suite_id, out, task_patterns):
    """Write what an agent is given: README.md (contract, checks, rules), tasks.jsonl, <task>/TASK.md and
    <task>/baseline.py. No ground-truth programs."""
    from accelbench.builder import plan, task_pack

    catalog = _catalog(ctx)
    suite = catalog.suite(suite_id)
    tasks = plan.select_tasks(catalog, suite, _split(task_patterns))
    written = task_pack.write_task_pack(catalog, suite, tasks, out)
    click.echo(f"task pack: {len(tasks)} tasks, {len(written)} files in {out}")


@main.command("check-program")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--task", "task_id", required=True, help="Task the program claims to solve.")
@click.option("--model", "model_path", help="Model folder or Hub id (default: the family's tiny synthetic model).")
@click.option("--variant", type=click.Choice([schema.GT, schema.BASELINE]), default=schema.GT, show_default=True,
              help="baseline: judge a baseline program of the task's setting (no not-a-no-op check).")
@click.option("--resolution", type=int, help="Image size to ask for (default: tiny model's, else the model's).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--seed", type=int, help="Seed of the gate's random inputs (default: drawn at random; the verdict "
                                       "records it).")
@click.option("--json", "as_json", is_flag=True, help="Print only the verdict, as JSON, on stdout.")
@click.option("--trace", "show_trace", is_flag=True,
              help="Also print the program's execution trace (its first call) as JSON (in the verdict with --json).")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the program's own output to this file (default: copied to stderr).")
@click.pass_context
def check_program(ctx, file, task_id, model_path, variant, resolution, device, seed, as_json, show_trace, log_path):
    """Run the correctness gate on a pipeline program (in a worker process); exit 0 only if it passes.

    The task's GT program runs on the same random inputs and model: the program passes if its execution trace
    matches the GT's (a failure names the first difference) and its images are as close to the GT's as the GT's
    own numerics allow. For a target task (levels 4, 5) the trace must keep the task's constraints against the
    baseline's instead. See "What the gate checks" in the README."""
    import tempfile

    from accelbench.builder import gate, programs

    catalog = _catalog(ctx)
    task = catalog.task(task_id)
    source = programs.read_program(file)
    with tempfile.TemporaryDirectory(prefix="accelbench-check-") as scratch:
        log = log_path or Path(scratch) / "program.log"
        verdict = gate.check_program(source, task, catalog, model_path, variant=variant, device=device,
                                     resolution=resolution, seed=seed, log_path=log)
        if log_path is None and log.exists() and log.stat().st_size:
            click.echo(log.read_text(errors="replace"), err=True, nl=False)
    if as_json:
        data = verdict.to_dict()
        if show_trace:
            data["trace"] = verdict.trace
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(verdict.format())
        if show_trace:
            click.echo(json.dumps(verdict.trace, indent=1))
    ctx.exit(0 if verdict.passed else EXIT_FAILED)


# ---------------------------------------------------------------------------------------------------------
# Generate
# ---------------------------------------------------------------------------------------------------------


class _SeedKey(click.ParamType):
    name = "HEX"

    def convert(self, value, param, ctx):
        text = str(value).strip().lower()
        if not 8 <= len(text) <= 64 or any(char not in "0123456789abcdef" for char in text):
            self.fail(f"{value!r} is not a key of 8 to 64 hex digits", param, ctx)
        return text


SEED_KEY = _SeedKey()


def _split(value: str | None) -> list[str] | None:
    """``"a, b"`` -> ["a", "b"]; None stays None (the default), and ``","`` is an empty selection."""
    return None if value is None else [part.strip() for part in value.split(",") if part.strip()]


@main.command()
@click.option("--suite", "suite_id", default="smoke", show_default=True, help="Suite to generate.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Dataset folder.")
@click.option("--tasks", "task_patterns", help=TASKS_HELP)
@click.option("--submission", "submission_dirs", multiple=True, type=click.Path(path_type=Path),
              help="A submission folder of <task_id>.py programs (repeatable); runs as variant sub:<name>.")
@click.option("--variants", help="Comma-separated: baseline, gt, sub:NAME (default: all of them).")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N prompts.")
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Prompt file (.txt lines, or .tsv/.csv with a Prompt column) instead of the suite's.")
@click.option("--seeds", help="Comma-separated seeds instead of the suite's (e.g. secret ones for scoring).")
@click.option("--device", help="cuda, cuda:N or cpu (default: cuda if available).")
@click.option("--weights", type=click.Choice(WEIGHTS_MODES),
              help="pretrained: real checkpoints; random: full-size architectures, random weights (timing only); "
                   "tiny: tiny synthetic models. Default: the suite's.")
@click.option("--model", "model_paths", multiple=True, metavar="FAMILY=PATH",
              help="Load FAMILY's pretrained weights from a local folder (repeatable).")
@click.option("--timing", type=click.Choice(schema.TIMING_MODES), default=schema.TIMING_MODES[0], show_default=True,
              help="interleaved: a setting's programs take turns batch by batch; sequential: one after another.")
@click.option("--max-resident", type=click.IntRange(min=2), help="At most this many pipelines loaded at once per "
              "setting (default: all on CPU; on CUDA as many as the baseline's measured footprint lets fit, which "
              "this never exceeds).")
@click.option("--call-timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds one batch may take "
              "(default: max(60, 10 x the baseline's median batch latency)).")
@click.option("--load-timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_LOAD_TIMEOUT_S,
              show_default=True, help="Seconds a program's load() may take.")
@click.option("--warmup-timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_WARMUP_TIMEOUT_S,
              show_default=True, help="Seconds a warm-up call may take (compilation and autotuning happen there).")
@click.option("--sandbox", type=click.Choice(SANDBOXES), default=SANDBOXES[0], show_default=True,
              help="bwrap: run the workers under bubblewrap (read-only root, no network, dataset hidden).")
@click.option("--gate", "gate_mode", type=click.Choice(GATE_MODES), default=GATE_MODES[0], show_default=True,
              help="Programs that must pass the correctness gate (tiny model, CPU) before they are timed; "
                   "a failing one gets 'rejected' rows. all: GT programs too.")
@click.option("--audit-fraction", type=click.FloatRange(0, 1), default=DEFAULT_AUDIT_FRACTION, show_default=True,
              help="Fraction of a gated submission's timed batches replayed under the tracer after timing (at least "
                   "2 of them; 0: none). Every timed image is compared with the GT's whatever this is.")
@click.option("--seed-key", type=SEED_KEY, help="Hex key the images' seeds are derived with (default: the dataset's, "
              "or a random one for a new dataset); pass the same key to compare images across datasets.")
@click.option("--repeats", type=click.IntRange(min=1),
              help="Render and time everything this many times (default: the suite's), each repeat with fresh "
                   "workers and the units in an order of its own: the scorer's intervals then cover run-to-run "
                   "variation.")
@click.option("--retry-failed", is_flag=True, help="Re-run the rows whose status is not ok and replace them.")
@click.option("--warmup", type=click.IntRange(min=0), help="Warm-up batches per worker (default: the suite's).")
@click.option("--shard", help="I/N: run shard I of N by hand (default: RANK/WORLD_SIZE from torchrun/accelerate).")
@click.option("--encode-workers", type=click.IntRange(min=1),
              help="PNG encoding processes (default: CPU cores - 2, at most 8).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
def generate(ctx, suite_id, out, task_patterns, submission_dirs, variants, limit, prompts_file, seeds, device,
             weights, model_paths, timing, max_resident, call_timeout, load_timeout, warmup_timeout, sandbox, gate_mode,
             audit_fraction, seed_key, repeats, retry_failed, warmup, shard, encode_workers, no_progress):
    """Render every (task, variant, seed, batch size) of a suite into a resumable Parquet dataset.

    Every program runs in a worker process of its own; the harness times each batch. Exit 1 when baseline or GT
    rows fail (a submission's failures are its results)."""
    from accelbench.builder import plan
    from accelbench.builder.generate import run_generate
    from accelbench.builder.options import GenerateOptions

    overrides = {}
    for item in model_paths:
        family, sep, path = item.partition("=")
        if not sep or not path:
            raise UserError(f"--model takes FAMILY=PATH, got {item!r}")
        overrides[family] = path
    options = GenerateOptions(
        suite=suite_id, out=out, tasks=_split(task_patterns), variants=_split(variants), limit=limit,
        device=device, weights=weights, shard=plan.parse_shard(shard) if shard else None, prompts_file=prompts_file,
        seeds=plan.parse_seeds(seeds) if seeds is not None else None, warmup_batches=warmup, model_paths=overrides,
        submissions=list(submission_dirs), timing=timing, max_resident=max_resident, call_timeout=call_timeout,
        load_timeout=load_timeout, warmup_timeout=warmup_timeout, sandbox=sandbox, gate=gate_mode,
        audit_fraction=audit_fraction, seed_key=seed_key, repeats=repeats, retry_failed=retry_failed,
        encode_workers=encode_workers,
        progress=not no_progress,
    )
    summary = run_generate(options, _catalog(ctx))
    click.echo(summary.format())
    ctx.exit(EXIT_FAILED if summary.reference_failed_rows else 0)


@main.group()
def targets():
    """Target tasks (levels 4 and 5): search a setting for feasible targets and their reference programs."""


@targets.command("search")
@click.option("--model", "model_id", required=True, help="Model family id (accelbench tasks lists them).")
@click.option("--scheduler", "scheduler_id", required=True, help="Scheduler id, e.g. ddim.")
@click.option("--steps", type=click.IntRange(min=1), required=True, help="num_inference_steps of the setting.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Dataset folder the search generates into (resumable).")
@click.option("--results", "results_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Results JSON to write (default: OUT/target_search.json).")
@click.option("--weights", type=click.Choice(WEIGHTS_MODES), default="random", show_default=True,
              help="random: full-size architectures with random weights (timing); tiny: tiny synthetic models.")
@click.option("--device", help="cuda, cuda:N or cpu (default: cuda if available).")
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Prompt file (.txt lines, or .tsv/.csv with a Prompt column); default: the gate's prompt pool.")
@click.option("--limit", type=click.IntRange(min=1), default=8, show_default=True, help="Use the first N prompts.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--methods", help="Comma-separated method ids to search (default: every one that applies).")
@click.option("--max-candidates", type=click.IntRange(min=1), default=50, show_default=True,
              help="The search's budget: at most this many configurations, in catalogue order.")
@click.option("--seed-key", type=SEED_KEY, help="Hex key the images' seeds are derived with.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
def targets_search(ctx, model_id, scheduler_id, steps, out, results_path, weights, device, prompts_file, limit,
                   seeds, batch_size, methods, max_candidates, seed_key, no_progress):
    """Time every searched configuration of a setting beside its baseline; write the candidates, the Pareto front
    of speedup against PSNR to the baseline, and the targets derived from it with their reference programs."""
    from accelbench.builder import plan, target_search
    from accelbench.builder.gate.inputs import PROMPT_POOL
    from accelbench.manifest import PromptSource

    catalog = _catalog(ctx)
    chosen = tuple(_split(methods) or ())
    for kind, values, known in (("model", [model_id], catalog.models), ("scheduler", [scheduler_id],
                                                                       catalog.schedulers),
                                ("method", chosen, catalog.models[model_id].methods if model_id in catalog.models
                                 else catalog.methods)):
        for value in values:
            if value not in known:
                raise click.UsageError(unknown_name(kind, value, known))
    prompts = tuple(plan.load_prompts(PromptSource(inline=PROMPT_POOL), prompts_file, limit))
    seed_list = tuple(int(seed) for seed in _split(seeds) or ["0"])
    results = target_search.run_search(catalog, model_id, scheduler_id, steps, out, weights=weights, device=device,
                                       prompts=prompts, seeds=seed_list, batch_size=batch_size,
                                       methods=chosen or None, max_candidates=max_candidates, seed_key=seed_key,
                                       progress=not no_progress)
    path = results_path or out / "target_search.json"
    target_search.write_results(results, path)
    click.echo(f"targets search: {len(results['candidates'])} configurations of {results['setting']} on "
               f"{results['device_name']}, {len(results['front'])} on the front, {len(results['targets'])} tiers; "
               f"results in {path}")
    for derived in results["targets"]:
        latency = ", ".join(f"{gpu} {ms:g} ms" for gpu, ms in (derived["latency_ms"] or {}).items()) or "none"
        click.echo(f"  {derived['tier']:<6} speedup >= {derived['speedup']:g}x, latency target {latency}; reference "
                   f"{derived['method']} {json.dumps(derived['params'])}")


@targets.command("tasks")
@click.argument("results_paths", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--fixed", "fixed_sets", multiple=True,
              help="Comma-separated fields the tasks fix (of sampler, steps, dtype, guidance; 'none' for none); "
                   "repeat for one task per set, the sets other than the default named in the id "
                   "(default: sampler,steps,dtype).")
@click.option("--budget-psnr", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="dB of PSNR to the baseline a submission may lose beyond the reference's.")
@click.option("--budget-clip", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Points of CLIP score loss a submission may add to the reference's.")
@click.pass_context
def targets_tasks(ctx, results_paths, fixed_sets, budget_psnr, budget_clip):
    """Print the target tasks that search results prove feasible, as one tasks/*.yaml file (texts rendered); each
    cites its results file, by the path given here, as its reference's evidence."""
    import yaml

    from accelbench.builder import target_search

    catalog, entries = _catalog(ctx), []
    sets = tuple(() if text.strip() == "none" else tuple(_split(text) or ()) for text in fixed_sets)
    for path in results_paths:
        entries += target_search.target_tasks(catalog, json.loads(path.read_text()), str(path),
                                              sets or (target_search.DEFAULT_FIXED,), (budget_psnr, budget_clip))
    click.echo(yaml.safe_dump({"tasks": entries}, sort_keys=False, allow_unicode=True, width=1000), nl=False)


@main.command()
@click.argument("directories", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Dataset folder to write: a new or empty one, or a dataset to merge the others into.")
def merge(directories, out):
    """Merge datasets generated separately (generate --shard I/N on other machines, later runs) into one, for
    score and publish.

    Refuses, writing nothing, datasets made with other pinned fields or task facts, a record whose status or
    pixels differ between them, and two different files of one name; a record in several is kept once. Merging
    again changes nothing. Scores are not merged: run `accelbench score OUT`."""
    from accelbench import dataset_merge

    click.echo(dataset_merge.merge(list(directories), out).format())


# ---------------------------------------------------------------------------------------------------------
# Score, report, publish
# ---------------------------------------------------------------------------------------------------------


def _fast_p(value: str | None) -> tuple[float, ...]:
    """``--fast-p 0,1,1.5,2`` -> the leaderboard's speedup thresholds (default: schema.DEFAULT_FAST_P)."""
    from accelbench.schema import DEFAULT_FAST_P

    if value is None:
        return DEFAULT_FAST_P
    try:
        thresholds = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise UserError(f"--fast-p takes comma-separated numbers, e.g. 0,1,1.5,2; got {value!r}") from None
    if not thresholds or any(p < 0 or p != p or p == float("inf") for p in thresholds):
        raise UserError(f"--fast-p takes one or more finite speedups >= 0, got {value!r}")
    return tuple(dict.fromkeys(thresholds))


FAST_P_HELP = "Leaderboard speedup thresholds p of fast_p, comma-separated (default: 0,1,1.5,2)."


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--clip-model", help="open_clip model name (default: the dataset's, from its suite).")
@click.option("--clip-pretrained", help="open_clip pretrained tag, or 'random' (default: the dataset's).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Images per CLIP batch.")
@click.option("--workers", type=click.IntRange(min=0), help="Image decoding processes (default: CPU count).")
@click.option("--fast-p", "fast_p", help=FAST_P_HELP)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
def score(ctx, directory, clip_model, clip_pretrained, device, batch_size, workers, fast_p, no_progress):
    """CLIP scores, fidelity to the baseline (and submissions' to the GT) and the report, offline from a
    generated dataset; with submissions also the leaderboard.

    Incremental: images already scored with the same recipe are skipped; another recipe is stored beside it.
    Exits 1 when a generation file or an image could not be read (the rest is scored; the report says which)."""
    from accelbench.scorer.score import score_dataset

    thresholds = _fast_p(fast_p)
    summary = score_dataset(directory, clip_model, clip_pretrained, device=device, batch_size=batch_size,
                            num_workers=workers, progress=not no_progress, fast_p=thresholds)
    click.echo(summary.format())
    ctx.exit(0 if summary.complete else EXIT_FAILED)


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--recipe", "recipe_id", help="CLIP recipe id to report (default: the only or the dataset's one).")
@click.option("--fast-p", "fast_p", help=FAST_P_HELP)
def report(directory, recipe_id, fast_p):
    """Rebuild DIR/report (summary.json/.csv, report.md, pareto.png; the leaderboard files with submissions)
    from the stored scores alone."""
    from accelbench.scorer.report import REPORT_MD, build_report

    built = build_report(directory, recipe_id=recipe_id, fast_p=_fast_p(fast_p))
    board = built.leaderboard
    click.echo(f"report: {built.folder / REPORT_MD} ({len(built.pooled)} task x variant rows"
               + (f"; leaderboard of {len(board.rows) - 1} submission(s))" if board else ")"))
    for note in built.notes:
        click.echo(f"note: {note}")


@main.command()
@click.argument("directories", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write leaderboard.csv/.json/.md, leaderboard_tasks.csv, fast_p.png and "
                   "speedup_heatmap.png into (default: print the table only).")
@click.option("--fast-p", "fast_p", help=FAST_P_HELP)
@click.option("--allow-mixed", is_flag=True,
              help="Merge results timed on different GPU models or against different baseline programs.")
def leaderboard(directories, out, fast_p, allow_mixed):
    """Merge the leaderboard results of several scored datasets of one suite (each DIR/report/ from `score`).

    Refuses datasets of different suites, and unless --allow-mixed, of different GPU models (device_name) or
    baseline programs (sha256): their speedups are not comparable."""
    from accelbench import dataset
    from accelbench.scorer import leaderboard_files, leaderboard_markdown, leaderboard_merge, markdown

    board = leaderboard_merge.merge(list(directories), fast_p=_fast_p(fast_p), allow_mixed=allow_mixed)
    title = f"{board.meta['suite']} ({len(directories)} dataset(s))"
    header, cells = leaderboard_markdown.table_rows(board)
    click.echo(markdown.table(header, cells))
    if out is not None:
        leaderboard_files.write(out, board, title)
        dataset.write_bytes_atomic(out / leaderboard_files.LEADERBOARD_MD, (
            f"# accelbench leaderboard: {title}\n\n" + leaderboard_markdown.markdown_section(board)).encode())
        click.echo(f"leaderboard: {out / leaderboard_files.LEADERBOARD_CSV}")
    for note in board.notes:
        click.echo(f"note: {note}")


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("first")
@click.argument("second")
def compare(directory, first, second):
    """Compare two entries (submission names, or gt) of a scored dataset's leaderboard: per task the ratio of
    their speedups over the batches both have, with its CI, and overall over the tasks both solved, with the
    verdict (faster, slower, tied: the CI includes 1, or n/a: fewer than 5 such tasks)."""
    from accelbench.scorer.compare import compare_entries

    click.echo(compare_entries(directory, first, second).format())


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--repo-id", required=True, help="Hub dataset repository, ORG/NAME.")
@click.option("--private", is_flag=True, help="Create the repository private.")
@click.option("--revision", help="Branch to push to (created if missing).")
@click.option("--dry-run", "staging_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Only stage the Hub-ready folder here; upload nothing.")
@click.option("--allow-unscored", is_flag=True, help="Publish generations without scores.")
def publish(directory, repo_id, private, revision, staging_dir, allow_unscored):
    """Publish a dataset to the Hugging Face Hub with a dataset card (token: HF_TOKEN or a cached login).

    Exits 1 when the Hub cannot be reached; running it again re-stages and re-uploads (see accelbench.hub.stage)."""
    from accelbench.hub import stage as hub

    if staging_dir is not None:
        click.echo(hub.stage(directory, staging_dir, repo_id, allow_unscored=allow_unscored).format())
        return
    url = hub.publish(directory, repo_id, private=private, revision=revision, allow_unscored=allow_unscored)
    click.echo(f"published {url}")
