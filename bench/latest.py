"""The headline tables, bench/results/latest/<device>.md: one per device, made from the result files of the
current code in bench/results/, so that every number in them is data, not prose; and their summary in
bench/README.md (between its headline markers).

Each number stands beside the bare loop it was compared with in the same call, with its 95 % CI and n; each
section ends with the targets its benchmark checks and their verdicts (targets.py).

    python bench/latest.py           # rewrite the tables and the summary
    python bench/latest.py --check   # exit 1 where one is not what the results give
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_score import bound, recorded_repeats, score_target  # noqa: E402
from deviation_calibration import threshold_targets  # noqa: E402
from gate_calibration import tolerance_targets  # noqa: E402
from paired_stats import BARE, BASELINE, HARNESS, METHOD_LABELS, cost_target, interval, run_targets  # noqa: E402
from pool_runs import THROUGHPUT, against_control, per_run_figures, pooled_targets, read_runs, rounds_pooled  # noqa: E402
from reliability import identical_target  # noqa: E402
from targets import MET, NOT_DECIDABLE, NOT_MET, Target, markdown_table  # noqa: E402

VERDICTS = (MET, NOT_DECIDABLE, NOT_MET)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LATEST = RESULTS / "latest"
README = ROOT / "bench" / "README.md"
SUMMARY_BEGIN, SUMMARY_END = "<!-- headline: made by bench/latest.py -->", "<!-- end of headline -->"
MADE_BY = ("Made by `python bench/latest.py` from the files in `bench/results/` it names; tests/test_bench.py checks "
           "that it is what they give.")

H200_SD15_GENERATE = ["generate-sd15-h200-run16-threads-left-alone.json",
                      "generate-sd15-h200-run18-threads-left-alone.json", "generate-sd15-h200-run21.json"]
H200_SD15_CONTROL = ["generate-sd15-h200-run19-bare-vs-bare.json", "generate-sd15-h200-run20-bare-vs-bare.json"]
H200_SDXL = ["generate-sdxl-h200-run4.json", "generate-sdxl-h200-run6-paired-deepcache.json"]
H200_SD15_CONFINED = ["generate-sd15-h200-run22-confined.json"]
H200_SD21_METHODS = ["generate-sd21-h200-methods.json"]
# Each its own section: the runs differ in code and submissions.
H200_AUDIT = ["audit-h200-sd15.json", "audit-h200-sd15-saboteurs.json"]
H200_DEVICE_QUIET = ["device-quiet-h200.json"]
CPU_GENERATE = [f"generate-sd15-cpu-tiny-paired-threads-left-alone-run{run}-n100.json" for run in range(1, 6)]
CPU_CONTROL = [f"generate-sd15-cpu-tiny-paired-bare-vs-bare-run{run}-n100.json" for run in range(1, 6)]
CPU_COVERAGE = ["coverage-cpu-k5.json", "coverage-cpu-k1.json"]
CPU_WHOLE_ROUNDS = ["generate-sd15-cpu-tiny-paired-whole-rounds-n100.json",
                    "generate-sd15-cpu-tiny-paired-bare-vs-bare-whole-rounds-n100.json"]


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def files(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def software(report: dict) -> str:
    versions = report["versions"]
    return (f"{report['device']}, Python {versions['python']}, torch {versions['torch']}, diffusers "
            f"{versions['diffusers']}, DeepCache {versions['DeepCache']}, tomesd {versions['tomesd']}, tgate "
            f"{versions['tgate']}")


def with_interval(value: float, ci, spec: str, scale: float = 1, unit: str = "") -> str:
    return f"{scale * value:{spec}}{unit} {interval(ci, spec, scale)}".rstrip()


def rows_table(rows: list[dict], compared: str) -> list[str]:
    """A paired comparison's rows: each method on the compared side beside the bare loop of the same rounds."""
    bare = {row["method"]: row for row in rows if row["mode"] == BARE}
    lines = [f"| method | bare ms/img | {compared} ms/img | throughput vs bare [95 % CI] | bare speedup [95 % CI] | "
             f"{compared} speedup [95 % CI] | {compared} speedup vs bare's [95 % CI] | n rounds |",
             "|---|---|---|---|---|---|---|---|"]
    for row in (row for row in rows if row["mode"] == HARNESS):
        reference = bare[row["method"]]
        difference = ("–" if row["method"] == BASELINE else
                      with_interval(row["speedup_difference_to_bare"], row["speedup_difference_ci"], "+.1f", 100, " %"))
        lines.append(f"| {METHOD_LABELS[row['method']]} | {reference['ms_per_image']:.0f} | "
                     f"{row['ms_per_image']:.0f} | "
                     f"{with_interval(row['throughput_ratio_to_bare'], row['throughput_ratio_ci'], '.3f')} | "
                     f"{speedup_text(reference)} | {speedup_text(row)} | {difference} | {row['n_batches']} |")
    return lines


def speedup_text(row: dict) -> str:
    return "1.00×" if row["method"] == BASELINE else with_interval(row["speedup"], row["speedup_ci"], ".2f", unit="×")


def pooled_line(pooled_ratio: dict, compared: str) -> str:
    return (f"Every method pooled, the {compared}'s throughput over the bare loop's: "
            f"{with_interval(pooled_ratio['ratio'], pooled_ratio['ci'], '.3f')} (n = {pooled_ratio['n_rounds']} "
            f"rounds).")


def figure_text(name: str, value: float, ci=None, signed: bool = False) -> str:
    if name == THROUGHPUT:
        return with_interval(value, ci, "+.3f" if signed else ".3f") if ci is not None else f"{value:.3f}"
    return with_interval(value, ci, "+.1f", 100, " %") if ci is not None else f"{100 * value:+.1f} %"


class Section(NamedTuple):
    title: str
    lines: list[str]
    targets: list[Target]


class Page(NamedTuple):
    file: str
    title: str
    intro: str
    sections: list[Section]

    def markdown(self) -> str:
        lines = [f"# {self.title}", "", self.intro]
        for section in self.sections:
            lines += ["", f"## {section.title}", "", *section.lines]
        return "\n".join(lines) + "\n"


def runs_against_control(title: str, intro: str, generate: list[str], control: list[str]) -> Section:
    """Generate's runs and the control's: every round pooled, then runs as the unit, then the targets over runs."""
    runs, controls = read_runs([RESULTS / name for name in generate]), read_runs([RESULTS / name for name in control])
    rows, pooled_ratio = rounds_pooled(runs)
    ours, theirs, differences = per_run_figures(runs), per_run_figures(controls), against_control(runs, controls)
    targets = pooled_targets(runs, controls)
    lines = [intro, "", f"Generate: {files(generate)}. Control (a second bare loop in the harness's place, no "
             f"harness): {files(control)}.", "",
             f"Every round of the {len(generate)} generate runs pooled (CIs resample rounds):", "",
             *rows_table(rows, "harness"), "", pooled_line(pooled_ratio, "harness"), "",
             f"Runs as the unit (CIs resample runs; none from fewer than five): generate n = {len(generate)} runs, "
             f"control n = {len(control)} runs.", "",
             "| figure | generate [95 % CI] | generate per run | control [95 % CI] | control per run | "
             "generate − control [95 % CI] |", "|---|---|---|---|---|---|"]
    for name, figure in ours.items():
        label = "throughput vs bare" if name == THROUGHPUT else f"{METHOD_LABELS[name]} speedup vs bare's"
        lines.append(f"| {label} | {figure_text(name, figure.value, figure.ci)} | "
                     f"{' '.join(figure_text(name, value) for value in figure.per_run)} | "
                     f"{figure_text(name, theirs[name].value, theirs[name].ci)} | "
                     f"{' '.join(figure_text(name, value) for value in theirs[name].per_run)} | "
                     f"{figure_text(name, differences[name].value, differences[name].ci, signed=True)} |")
    return Section(title, [*lines, "", "Targets, runs as the unit:", "", *markdown_table(targets)], targets)


def single_runs(title: str, intro: str, names: list[str]) -> Section:
    """Each run on its own: its rows, pooled ratio and targets (CIs over its rounds)."""
    lines, targets = [intro], []
    for name in names:
        runs = read_runs([RESULTS / name])
        compared = "control" if runs.control else "harness"
        rows, pooled_ratio = rounds_pooled(runs)
        run_goals = run_targets(rows, pooled_ratio)
        targets += run_goals
        lines += ["", f"`{name}` ({load(name)['date']}, {compared}; CIs over its rounds):", "",
                  *rows_table(rows, compared), "", pooled_line(pooled_ratio, compared), "", *markdown_table(run_goals)]
    return Section(title, lines, targets)


def harness_cost(names: list[str], note: str) -> Section:
    """The null program's cost per batch in each generate run, against the bare baseline batch of the same call."""
    lines = ["| run | batch | null program: median, max ms (n calls) | bare baseline batch, median ms | "
             "slowest call / bare baseline batch | target ≤ 1 % |", "|---|---|---|---|---|---|"]
    targets = []
    for name in names:
        entry = next(iter(load(name)["families"].values()))
        overhead = entry["overhead"]
        bare_baseline = next(row for row in entry["rows"] if row["mode"] == BARE and row["method"] == BASELINE)
        targets.append(cost_target(overhead, bare_baseline["batch_latencies_s"]))
        batch, height, width, _ = overhead["batch"]
        lines.append(f"| `{name}` | {batch} × {height}×{width} | {overhead['round_trip_ms_median']:.1f}, "
                     f"{overhead['round_trip_ms_max']:.1f} ({overhead['repeats']}) | "
                     f"{1000 * statistics.median(bare_baseline['batch_latencies_s']):.0f} | {targets[-1].measured()} | "
                     f"**{targets[-1].verdict}** |")
    return Section("The harness's own cost per batch", [*lines, "", note], targets)


def scoring(name: str, device_type: str) -> Section:
    """bench_score.py's result: each measurement's decode, forward, bound and scorer rates, and the target."""
    result = load(name)
    lines = [f"`{name}` ({result['date']}): {result['model']}/{result['pretrained']}, {result['images']} PNGs of "
             f"{result['size']}² ({result['png_kib']:.0f} KiB), {result['cores']} cores. The bound: "
             + ("decoding and the forward share the cores, so their times add." if device_type == "cpu" else
                "the slower of decoding (every core) and the forward (the GPU), which overlap."), "",
             "| repeat | decode + preprocess, img/s | bare forward, img/s | bound, img/s | accelbench score, img/s | "
             "ratio to bound |", "|---|---|---|---|---|---|"]
    ratios = []
    for number, repeat in enumerate(recorded_repeats(result), 1):
        limit = bound(repeat["decode_preprocess_images_per_s"], repeat["forward_images_per_s"], device_type)
        ratios.append(repeat["accelbench_images_per_s"] / limit)
        lines.append(f"| {number} | {repeat['decode_preprocess_images_per_s']:.1f} | "
                     f"{repeat['forward_images_per_s']:.1f} | {limit:.1f} | {repeat['accelbench_images_per_s']:.1f} | "
                     f"{ratios[-1]:.2f} |")
    targets = [score_target(ratios)]
    return Section("Scoring throughput", [*lines, "", *markdown_table(targets)], targets)


def reliability(name: str) -> Section:
    result = load(name)
    modes: dict[str, int] = {}
    for trial in result["trials"]:
        modes[trial["mode"]] = modes.get(trial["mode"], 0) + 1
    machine = result["machine"]
    targets = [identical_target(result["identical"], result["total"])]
    return Section("Reliability: killed and resumed runs", [
        f"`{name}` ({result['date'][:10]}, {machine['cpu']}, {machine['usable_cores']} cores, torch "
        f"{machine['versions']['torch']}): {result['total']} trials in {result['seconds']:.0f} s (clean run "
        f"{result['clean']['seconds']:.1f} s, {result['clean']['rows']} rows); modes "
        + ", ".join(f"{count} {mode}" for mode, count in modes.items())
        + f"; {result['kills_landed']} of {result['kills']} kills landed before their run finished.", "",
        *markdown_table(targets)], targets)


def stored_targets(result: dict) -> list[Target]:
    """The targets a benchmark decided and wrote into its JSON."""
    return [Target(**{**target, "interval": tuple(target["interval"]) if target["interval"] else None})
            for target in result["targets"]]


def audit(name: str) -> Section:
    """bench_audit.py's result: what the gate and the audit made of each submission, the GT's replays, the cost."""
    result = load(name)
    quiet = result.get("device_quiet")
    checked = ("" if not quiet else
               f" The device-quiet check: {quiet['calls_checked']} calls, {quiet['calls_waited']} waited "
               f"{quiet['waited_s']} s in all (longest {quiet['longest_wait_s']} s).")
    lines = [f"`{name}` ({result['date']}): suite `{result['suite']}`, tasks {', '.join(result['tasks'])}, "
             f"{result['prompts']} prompts, audit fraction {result['audit_fraction']} (every timed batch replayed), "
             f"run {result['wall_s']:.0f} s. Submissions from `bench/audit_programs.py`; images against the GT's of "
             "the same prompt and seed (uint8 levels, ok rows); latency: median batch over the baseline's of the "
             f"same round.{checked}", "",
             "| submission | task | rows | vs GT max / mean | latency / baseline | first reason |",
             "|---|---|---|---|---|---|"]
    for submission, by_task in result["submissions"].items():
        for task, entry in by_task.items():
            rows = ", ".join(f"{count} {status}" for status, count in sorted(entry["statuses"].items()))
            versus = "–" if entry["max_abs"] is None else f"{entry['max_abs']} / {entry['mean_abs']:.3f}"
            ratio = "–" if entry["latency_ratio"] is None else f"{entry['latency_ratio']:.3f}"
            reason = (entry["reason"] or "–").replace("|", "\\|")  # a pipe in a reason would split its cell
            lines.append(f"| {submission} | {task} | {rows} | {versus} | {ratio} | {reason} |")
    units = result["audit"]["units"]
    replays = "; ".join(f"{unit['unit']} batch size {unit['batch_size']}, rounds {unit['rounds']}: max |diff| "
                        f"{unit['replay_max_abs']}" for unit in units if "replay_max_abs" in unit)
    seconds = sum(unit["seconds"] for unit in units)
    targets = stored_targets(result)
    return Section(f"The audit of what was timed: {', '.join(result['tasks'])} ({result['date']})", [
        *lines, "", f"GT replays: {replays}. The audit's replays took {seconds:.1f} s in all.", "",
        *markdown_table(targets)], targets)


def device_quiet(name: str) -> Section:
    """device_quiet.py's result: the probe on an idle GPU and beside another process's work, settle()'s verdicts."""
    result = load(name)
    check = result["check"]
    rows = ["| condition | probes | median ms | p99 ms | max ms |", "|---|---|---|---|---|"]
    for key, label in (("idle", "idle GPU"), ("busy_products", "another process's matrix products"),
                       ("busy_spin", "another process's spinning kernel")):
        entry = result[key]
        rows.append(f"| {label} | {entry['n']} | {entry['median_ms']:.3f} | {entry['p99_ms']:.3f} | "
                    f"{entry['max_ms']:.3f} |")
    targets = stored_targets(result)
    return Section(f"The device-quiet check ({result['date']})", [
        f"`{name}`: busy above {check['busy_threshold_ms']} ms (idle median {check['idle_probe_ms']} ms at the "
        f"start), quiet after 5 quiet probes in a row, grace {check['grace_s']} s.", "", *rows, "",
        *markdown_table(targets)], targets)


def coverage(names: list[str]) -> Section:
    """interval_coverage.py's results: per K, the runs' spread, the intervals' and the share inside another's."""
    lines = ["| file | K | intervals | runs | runs' speedups | runs' CV | SD the intervals imply | share inside "
             "another run's interval [95 % CI] |", "|---|---|---|---|---|---|---|---|"]
    targets = []
    results = {name: load(name) for name in names}
    for name, result in results.items():
        speedups = [run["speedup"] for run in result["runs"]]
        targets += stored_targets(result)
        lines.append(f"| `{name}` | {result['repeats']} | {result['levels']} | {len(speedups)} | "
                     f"{min(speedups):.3f}–{max(speedups):.3f} | {100 * result['runs_cv']:.1f} % | "
                     f"{100 * result['interval_implied_sd']:.1f} % | {targets[-1].measured()} |")
    first = results[names[0]]
    return Section("What a speedup's interval covers", [
        f"{first['date']}, `{first['task']}` (baseline and GT), each run with fresh workers in a folder of its own; "
        "83 % is the share for calibrated intervals and runs of equal spread; more is an interval wider than the "
        "runs scatter.", "", *lines, "", *markdown_table(targets)], targets)


def calibrations() -> Section:
    from accelbench.manifest import load_catalog

    catalog = load_catalog()
    gate = load("gate_calibration.json")
    deviation = load("deviation_calibration.json")
    rows = [{key: math.inf if value == "inf" else value for key, value in row.items()} for row in deviation["rows"]]
    tolerances = tolerance_targets(catalog, gate["summary"], gate["rows"])
    thresholds = threshold_targets(catalog, rows)
    return Section("Calibrations", [
        "`gate_calibration.json`: the gate's tolerances against the largest difference each covers (uint8 levels; "
        "tiny models, CPU, float32):", "", *markdown_table(tolerances), "",
        "`deviation_calibration.json`: each method's `deviation_psnr_db` against the lowest PSNR to the GT that the "
        "same computation with other numerics gave (another batch size or thread count, for ToMe another merge "
        "seed):", "", *markdown_table(thresholds)], tolerances + thresholds)


def h200() -> Page:
    sd15, sdxl = load(H200_SD15_GENERATE[-1]), load(H200_SDXL[0])
    return Page("h200.md", "Headline: NVIDIA H200", MADE_BY + " Full-size architectures with random weights in fp16 "
                f"(the timings are real, the images noise), DDIM 25 steps, batch 4; {sd15['device']} with 16 CPU "
                "cores in a Firecracker VM.", [
                    runs_against_control(f"Generate vs the bare loop: SD1.5 512² ({sd15['date']})",
                                         f"Software: {software(sd15)}.", H200_SD15_GENERATE, H200_SD15_CONTROL),
                    single_runs("Generate vs the bare loop: SD1.5 512², workers on a read-only file system "
                                f"({load(H200_SD15_CONFINED[0])['date']}, one run)",
                                "The first run since workers see a read-only file system and are frozen between "
                                "calls. One run of 16 rounds (64 images): its CIs cover its rounds, not repeats; its "
                                "batches spread as the earlier runs' do (CV 11-18 %), and the control runs above read "
                                "DeepCache below bare too (-8.8 %, -0.7 %).", H200_SD15_CONFINED),
                    single_runs(f"Generate vs the bare loop: SDXL 1024² ({sdxl['date']})",
                                f"Software: {software(sdxl)}. Run 4 lost DeepCache to an out-of-memory at warm-up "
                                "(since fixed); run 6 measured it beside the baseline alone. Both ran before the bare "
                                "loop was split into a process per method.", H200_SDXL),
                    single_runs(f"Generate vs the bare loop: SD2.1-base 512², every method and combination "
                                f"({load(H200_SD21_METHODS[0])['date']}, one run)",
                                "The first GPU run of the SD2.1 family and of the ToMe combinations: 4 rounds "
                                "(16 images), too few for an interval over rounds (none from fewer than five); each "
                                "figure is one run's point estimate. The SD2.1 768-v family's run (8 methods, 8 and "
                                "then 16 images) did not finish within a 10-minute lease.", H200_SD21_METHODS),
                    harness_cost([*H200_SD15_GENERATE, *H200_SD15_CONFINED, *H200_SD21_METHODS, *H200_SDXL],
                                 "The SDXL runs' null program returned C-contiguous images, which the quantiser of "
                                 "the time read faster than diffusers' layout: their figures understate a real "
                                 "batch's cost (on the 2-core CPU, diffusers' layout cost 17.4 ms per 4 × 1024² "
                                 "batch, median of 20 calls, max 21.6: 0.4 % of run 4's 4.2 s bare SDXL baseline "
                                 "batch)."),
                    scoring("score-h200.json", "cuda"),
                    *map(device_quiet, H200_DEVICE_QUIET),
                    *map(audit, H200_AUDIT)])


def cpu() -> Page:
    generate = load(CPU_GENERATE[0])
    return Page("cpu.md", "Headline: 2-core CPU", MADE_BY + f" {generate['device']}, 2 cores shared with other jobs. "
                f"Generate: the tiny synthetic SD1.5 ({generate['images']} images, 64², overhead-bound here as SD1.5 "
                "is launch-bound on the H200), DDIM 25 steps, batch 4, float32.", [
                    runs_against_control(f"Generate vs the bare loop ({generate['date']})",
                                         f"Software: {software(generate)}.", CPU_GENERATE, CPU_CONTROL),
                    single_runs("Generate vs the bare loop, a put-off bare round rendered whole (one run a side)",
                                "The runs above predate this fix of the bench (see "
                                "docs/investigations/sd15-harness-gap.md, §1.2, the asymmetry).", CPU_WHOLE_ROUNDS),
                    harness_cost(CPU_GENERATE, "A 4 × 64² batch: what it costs beside an overhead-bound tiny model, "
                                               "not the SDXL case the target is set for (see h200.md)."),
                    scoring("score-cpu.json", "cpu"),
                    reliability("reliability-2026-11-29.json"),
                    coverage(CPU_COVERAGE),
                    calibrations()])


def summary(pages: list[Page]) -> list[str]:
    """bench/README.md's headline: per device and section, its verdicts and its first target."""
    lines = ["| device | benchmark | verdicts | first target: measured [95 % CI], n |", "|---|---|---|---|"]
    for page in pages:
        for section in page.sections:
            counts = Counter(target.verdict for target in section.targets)
            verdicts = ", ".join(f"{counts[verdict]} {verdict}" for verdict in VERDICTS if counts[verdict])
            first = section.targets[0]
            lines.append(f"| [{page.title.removeprefix('Headline: ')}](results/latest/{page.file}) | {section.title} | "
                         f"{verdicts} | {first.goal}: {first.measured()}, {first.n} |")
    return lines


def readme_with(summary_lines: list[str]) -> str:
    """bench/README.md with its headline block replaced by ``summary_lines``."""
    text = README.read_text()
    start, end = text.index(SUMMARY_BEGIN) + len(SUMMARY_BEGIN), text.index(SUMMARY_END)
    return text[:start] + "\n" + "\n".join(summary_lines) + "\n" + text[end:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = parser.parse_args()
    pages = [h200(), cpu()]
    wanted = {LATEST / page.file: page.markdown() for page in pages} | {README: readme_with(summary(pages))}
    stale = []
    for path, text in wanted.items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"not what the results give: {', '.join(stale)}; run python bench/latest.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
