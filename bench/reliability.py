"""Reliability: random SIGKILL trials of `accelbench generate`, each resumed and compared with a clean run.

`accelbench generate` promises that a run killed at any point resumes, with the same arguments, to a dataset
identical to one made by a run that was never interrupted. This script checks that promise on random kills:

1. It makes a submission folder with a copy of one GT program (`accelbench gt-code TASK > DIR/sub/TASK.py`), so
   submissions are covered. The submission has no program for the other task, so it also writes `missing` rows.
   Then it runs once, cleanly, on a small slice of the embedded smoke suite:

       accelbench generate --suite smoke --tasks smoke-sd15-ddim-8-deepcache,smoke-pixart-alpha-dpmpp_2m-8-tgate \\
           --limit 2 --no-progress --out DIR/clean --submission DIR/sub

   The clean dataset is the reference. The number of batches it wrote (one part file each) and the number of
   shards set the range of the failpoints.
2. Each trial draws a kill mode with a seeded random generator. Every block of three trials covers all three
   modes, in random order:
   * `failpoint`: `ACCELBENCH_FAILPOINT=part:k | shard:k | shard-write:k` (builder/writer.py). The process
     SIGKILLs itself after its k-th part file, after its k-th shard, or in the middle of writing shard k (the
     temporary file written, not yet renamed). k is drawn from what the clean run wrote.
   * `external`: the run is started in a session of its own (`start_new_session=True`). After a random delay
     between 1 s and the clean run's duration, `os.killpg(pgid, SIGKILL)` kills the whole process group. The
     group holds the harness, its forkserver and its PNG encoders. Program workers have sessions of their own
     and exit once the harness is gone; the script waits for them.
   * `twice`: two kills before the resume. Each kill is a failpoint or an external kill. The second run's
     failpoint is drawn from what that run still has to write.
   Then it resumes with the same arguments and no failpoint.
3. The resumed dataset is compared with the clean one. Each check that fails is a reason:
   * the resume exits with the clean run's exit code;
   * the record ids are the same;
   * `image_sha256` and `status` are the same for every record;
   * no record id appears twice across all data files (shards and leftover parts, read raw, without the
     readers' deduplication), and every data file reads;
   * no `*.tmp` file is left anywhere in the dataset folder, and nothing is left under `.staging/`;
   * the rows present before the resume plus the rows that the resume wrote (its run record) equal the clean
     row count: the resume redid only what was missing.

Every process runs with `OMP_NUM_THREADS=1`, because CPU float results depend on the thread count. Worker
scratch folders go to DIR/scratch.

    python bench/reliability.py --trials 12 --seed 0              # DIR: a fresh temporary folder
    python bench/reliability.py --trials 3 --out /tmp/rel --keep   # keep every trial's dataset

Reading the result: a table with one row per trial (trial, mode and its parameters, rows present before the
resume out of the clean count, identical yes/no, seconds), then `N of N identical`. A trial that differs prints
its reasons and the exact commands that reproduce it, and its folder is kept. The exit code is 1 when any trial
differs. The JSON (`bench/results/reliability-<date>.json` by default) holds every trial's mode, parameters,
kills (failpoint or delay, exit code, whether the kill landed, rows after it), resume outcome, durations, and
the machine (CPU model, core count).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date, datetime, timezone
from importlib import metadata
from pathlib import Path

import pyarrow.parquet as pq
from tqdm import tqdm

from accelbench import dataset, schema
from accelbench.builder.writer import FAILPOINT_ENV

sys.path.insert(0, str(Path(__file__).resolve().parent))

from targets import as_json, every, print_targets  # noqa: E402

TASKS = ["smoke-sd15-ddim-8-deepcache", "smoke-pixart-alpha-dpmpp_2m-8-tgate"]
SUBMITTED_TASK = TASKS[1]  # the submission holds a copy of this task's GT program (and none for the other)
# One seed key for the clean run and every trial: their images are compared record by record.
SLICE_ARGS = ["--suite", "smoke", "--tasks", ",".join(TASKS), "--limit", "2", "--no-progress",
              "--seed-key", "0123456789abcdef"]
MODES = ("failpoint", "external", "twice")
FAILPOINT_KINDS = ("part", "shard", "shard-write")
TAG_ENV = "ACCELBENCH_RELIABILITY_TAG"  # marks every process of one generate run, to find its orphans
ORPHAN_WAIT_S = 60.0  # how long a killed run's workers get to exit on their own
BATCH_KEY = ("variant", "unit_id", "batch_size", "seed", "batch_index")  # one part file per batch


def base_env(work: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != FAILPOINT_ENV}
    env.update(OMP_NUM_THREADS="1", ACCELBENCH_SCRATCH=str(work / "scratch"), PYTHONUNBUFFERED="1")
    return env


def generate_argv(out: Path, sub: Path) -> list[str]:
    return [sys.executable, "-m", "accelbench", "generate", *SLICE_ARGS, "--out", str(out), "--submission", str(sub)]


# ---------------------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------------------


def tagged_pids(tag: str) -> list[int]:
    """Processes (of this user) whose environment carries ``TAG_ENV=tag``: a run's harness and all its children."""
    needle = f"{TAG_ENV}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_for_orphans(tag: str) -> dict:
    """Wait until every process of a killed run is gone. Returns how long that took, and the pids that had to
    be killed because they outlived ORPHAN_WAIT_S."""
    started = time.monotonic()
    while (pids := tagged_pids(tag)) and time.monotonic() - started < ORPHAN_WAIT_S:
        time.sleep(0.2)
    killed = []
    for pid in pids:  # still alive: processes this script started (through the run it killed)
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return {"orphans_gone_s": round(time.monotonic() - started, 2), "orphans_killed": killed}


def run_generate(out: Path, sub: Path, work: Path, log: Path, tag: str, *, failpoint: str | None = None,
                 kill_after: float | None = None, limit_s: float) -> dict:
    """One `accelbench generate` run in its own session. With ``failpoint`` set, it kills itself. With
    ``kill_after`` set, its process group is SIGKILLed after that many seconds unless it has exited. Runs past
    ``limit_s`` are killed and reported as hung."""
    env = base_env(work) | {TAG_ENV: tag}
    extra_env = {"OMP_NUM_THREADS": "1"}
    if failpoint is not None:
        env[FAILPOINT_ENV] = extra_env[FAILPOINT_ENV] = failpoint
    argv = generate_argv(out, sub)
    launched_at = datetime.now(timezone.utc)
    started = time.monotonic()
    with open(log, "ab") as handle:
        handle.write(f"\n$ {' '.join(f'{k}={v}' for k, v in extra_env.items())} {' '.join(argv)}\n".encode())
        handle.flush()
        process = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        killed_externally = hung = False
        deadline = started + (kill_after if kill_after is not None else limit_s)
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            hung = kill_after is None or time.monotonic() - started >= limit_s
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            killed_externally = not hung
        rc = process.wait()
    seconds = time.monotonic() - started
    record = {"argv": argv, "env": extra_env, "rc": rc, "seconds": round(seconds, 2), "hung": hung,
              "killed_externally": killed_externally, "launched_at": launched_at.isoformat()}
    if failpoint is not None or kill_after is not None:
        record |= wait_for_orphans(tag)
    return record


# ---------------------------------------------------------------------------------------------------------
# Reading datasets
# ---------------------------------------------------------------------------------------------------------


def read_rows(directory: Path) -> list[dict]:
    if not (directory / schema.DATASET_MANIFEST).exists():
        return []
    return dataset.read_generations(directory, ["image_sha256", "status", "setting_id", *BATCH_KEY]).to_pylist()


def raw_data_files(directory: Path) -> list[Path]:
    return sorted([*(directory / schema.GENERATIONS_DIR).glob("*.parquet"),
                   *(directory / schema.STAGING_DIR).glob("*/*.parquet")])


def run_record(directory: Path, before: set[str]) -> dict | None:
    new = sorted(set(p.name for p in (directory / schema.RUNS_DIR).glob("*.json")) - before)
    return json.loads((directory / schema.RUNS_DIR / new[-1]).read_text()) if new else None


def run_records(directory: Path) -> set[str]:
    return {path.name for path in (directory / schema.RUNS_DIR).glob("*.json")}


def still_to_write(directory: Path, clean_rows: list[dict]) -> tuple[int, int]:
    """(part files, shards) that the next run of the same arguments will write in ``directory``: one part per
    batch with a record not yet stored; one shard per setting with such a batch, plus one for the orphaned
    parts of a killed run that hold rows no shard has."""
    present = {row["record_id"] for row in read_rows(directory)}
    pending = [row for row in clean_rows if row["record_id"] not in present]
    batches = {tuple(row[key] for key in BATCH_KEY) for row in pending}
    settings = {row["setting_id"] for row in pending}
    in_shards = set()
    for path in dataset.shard_files(directory):
        in_shards.update(pq.read_table(path, columns=["record_id"]).column("record_id").to_pylist())
    orphan = any(set(pq.read_table(path, columns=["record_id"]).column("record_id").to_pylist()) - in_shards
                 for path in dataset.part_files(directory))
    return len(batches), len(settings) + int(orphan)


def compare(directory: Path, clean: dict[str, tuple], clean_rc: int, resume: dict, rows_before: int) -> list[str]:
    """The reasons ``directory`` differs from the clean dataset; empty when identical."""
    reasons = []
    if resume["rc"] != clean_rc:
        reasons.append(f"resume exited {resume['rc']} (clean run: {clean_rc})")
    got = {row["record_id"]: (row["image_sha256"], row["status"]) for row in read_rows(directory)}
    missing, extra = sorted(set(clean) - set(got)), sorted(set(got) - set(clean))
    if missing:
        reasons.append(f"{len(missing)} record(s) missing, e.g. {missing[0]}")
    if extra:
        reasons.append(f"{len(extra)} record(s) not in the clean run, e.g. {extra[0]}")
    for name, index in (("image_sha256", 0), ("status", 1)):
        differ = sorted(record for record in set(clean) & set(got) if clean[record][index] != got[record][index])
        if differ:
            reasons.append(f"{len(differ)} record(s) with another {name}, e.g. {differ[0]}: "
                           f"{got[differ[0]][index]!r} (clean: {clean[differ[0]][index]!r})")
    raw: Counter = Counter()
    for path in raw_data_files(directory):
        try:
            raw.update(pq.read_table(path, columns=["record_id"]).column("record_id").to_pylist())
        except Exception as error:  # noqa: BLE001 - any unreadable file is a finding
            reasons.append(f"unreadable data file {path.relative_to(directory)}: {str(error).splitlines()[0][:120]}")
    duplicated = sorted(record for record, count in raw.items() if count > 1)
    if duplicated:
        reasons.append(f"{len(duplicated)} record id(s) stored more than once across files, e.g. {duplicated[0]} "
                       f"x{raw[duplicated[0]]}")
    temporaries = sorted(str(path.relative_to(directory)) for path in directory.rglob("*.tmp"))
    if temporaries:
        reasons.append(f"{len(temporaries)} temporary file(s) left: {', '.join(temporaries[:3])}")
    staging = directory / schema.STAGING_DIR
    leftovers = sorted(str(path.relative_to(directory)) for path in staging.rglob("*")) if staging.is_dir() else []
    if leftovers:
        reasons.append(f"{len(leftovers)} entr(y/ies) left under {schema.STAGING_DIR}/: {', '.join(leftovers[:3])}")
    written = (resume.get("record") or {}).get("rows_written")
    if written is None:
        reasons.append("the resume wrote no run record")
    elif rows_before + written != len(clean):
        reasons.append(f"rows before the resume ({rows_before}) + rows it wrote ({written}) != {len(clean)}")
    return reasons


# ---------------------------------------------------------------------------------------------------------
# Trials
# ---------------------------------------------------------------------------------------------------------


def draw_kill(rng: random.Random, parts: int, shards: int, duration: float, allow_failpoint: bool = True) -> dict:
    """A failpoint (k drawn from what the run will write) or an external kill after a random delay."""
    kinds = [kind for kind, count in (("part", parts), ("shard", shards), ("shard-write", shards)) if count]
    if allow_failpoint and kinds:
        kind = rng.choice(kinds)
        count = parts if kind == "part" else shards
        return {"how": "failpoint", "failpoint": f"{kind}:{rng.randint(1, count)}", "of": count}
    return {"how": "external", "delay_s": round(rng.uniform(1.0, max(1.0, duration)), 2)}


def describe(kill: dict) -> str:
    text = kill["failpoint"] if kill["how"] == "failpoint" else f"killpg@{kill['delay_s']:.1f}s"
    return text + ("" if kill.get("landed", True) else " (missed)")


def run_trial(index: int, mode: str, rng: random.Random, ctx: dict) -> dict:
    out = ctx["work"] / f"trial-{index:03d}"
    shutil.rmtree(out, ignore_errors=True)
    log = ctx["work"] / f"trial-{index:03d}.log"
    log.unlink(missing_ok=True)
    started = time.monotonic()
    kills = []
    for number in range(2 if mode == "twice" else 1):
        if mode == "failpoint":
            kill = draw_kill(rng, ctx["parts"], ctx["shards"], ctx["duration"])
        elif mode == "external":
            kill = draw_kill(rng, 0, 0, ctx["duration"], allow_failpoint=False)
        else:
            parts, shards, duration = ctx["parts"], ctx["shards"], ctx["duration"]
            if number == 1:  # the second run has less to do: its failpoints and delays are drawn from that
                parts, shards = still_to_write(out, ctx["clean_rows"])
                duration = ctx["startup_s"] + (ctx["duration"] - ctx["startup_s"]) * parts / ctx["parts"]
            kill = draw_kill(rng, parts, shards, duration, allow_failpoint=rng.random() < 0.5)
        run = run_generate(out, ctx["sub"], ctx["work"], log, f"{os.getpid()}-{index}-{number}",
                           failpoint=kill.get("failpoint"), kill_after=kill.get("delay_s"), limit_s=ctx["limit_s"])
        kill |= run
        kill["landed"] = run["rc"] == -signal.SIGKILL and not run["hung"]
        kill["rows_after"] = len(read_rows(out))
        kills.append(kill)
        if run["hung"]:
            break
    rows_before = kills[-1]["rows_after"]
    before = run_records(out)
    if any(kill["hung"] for kill in kills):
        resume = {"rc": None, "seconds": 0.0, "record": None}
        reasons = ["a killed run hung past the time limit"]
    else:
        resume = run_generate(out, ctx["sub"], ctx["work"], log, f"{os.getpid()}-{index}-resume",
                              limit_s=ctx["limit_s"])
        resume["record"] = run_record(out, before)
        reasons = (["the resume hung past the time limit"] if resume["hung"] else
                   compare(out, ctx["clean"], ctx["clean_rc"], resume, rows_before))
    trial = {"trial": index, "mode": mode, "parameters": " + ".join(describe(kill) for kill in kills),
             "kills": kills, "rows_before_resume": rows_before, "rows_total": len(ctx["clean"]),
             "resume": {key: value for key, value in resume.items() if key != "record"} |
                       {"rows_written": (resume.get("record") or {}).get("rows_written")},
             "identical": not reasons, "reasons": reasons, "seconds": round(time.monotonic() - started, 2),
             "folder": str(out), "log": str(log)}
    if reasons:
        trial["reproduce"] = [" ".join([*(f"{k}={v}" for k, v in kill["env"].items()), *kill["argv"]])
                              + (f"  # then SIGKILL its process group after {kill['delay_s']} s"
                                 if kill["how"] == "external" else "") for kill in kills]
        trial["reproduce"].append(" ".join(["OMP_NUM_THREADS=1", *generate_argv(out, ctx["sub"])]))
    elif not ctx["keep"]:
        shutil.rmtree(out, ignore_errors=True)
        log.unlink(missing_ok=True)
    return trial


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {"python": platform.python_version()}
    for package in ("accelbench", "torch", "diffusers", "pyarrow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "load_average_at_start": list(os.getloadavg()), "platform": platform.platform(), "versions": versions}


def identical_target(identical: int, total: int):
    return every("every killed and resumed dataset identical to the clean run", identical, total)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, required=True, help="number of kill-and-resume trials")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill modes, failpoints and delays")
    parser.add_argument("--out", type=Path, help="working folder (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true",
                        help="keep every trial's dataset (a trial that differs is always kept)")
    parser.add_argument("--results", type=Path,
                        default=Path(__file__).parent / "results" / f"reliability-{date.today().isoformat()}.json",
                        help="where to write the JSON results (default: %(default)s)")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    work = (args.out or Path(tempfile.mkdtemp(prefix="accelbench-reliability-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if (work / "clean").exists() or any(work.glob("trial-*")):
        parser.error(f"--out {work} holds an earlier run's datasets; use an empty folder")
    started = time.monotonic()
    info = machine()

    # The submission: a copy of one GT program.
    sub = work / "sub"
    sub.mkdir(exist_ok=True)
    source = subprocess.run([sys.executable, "-m", "accelbench", "gt-code", SUBMITTED_TASK], env=base_env(work),
                            check=True, capture_output=True, text=True).stdout
    (sub / f"{SUBMITTED_TASK}.py").write_text(source)

    # The clean run.
    print(f"clean run in {work / 'clean'} ...", flush=True)
    clean_run = run_generate(work / "clean", sub, work, work / "clean.log", f"{os.getpid()}-clean", limit_s=1800)
    if clean_run["rc"] not in (0, 1) or clean_run["hung"]:
        print(f"error: the clean run failed (exit {clean_run['rc']}); see {work / 'clean.log'}", file=sys.stderr)
        return 2
    clean_rows = read_rows(work / "clean")
    clean = {row["record_id"]: (row["image_sha256"], row["status"]) for row in clean_rows}
    record = run_record(work / "clean", set())
    parts = len({tuple(row[key] for key in BATCH_KEY) for row in clean_rows})
    shards = len(dataset.shard_files(work / "clean"))
    first_row = min(row["started_at"] for row in dataset.read_generations(work / "clean", ["started_at"]).to_pylist()
                    if row["started_at"] is not None)
    startup_s = (first_row - datetime.fromisoformat(clean_run["launched_at"])).total_seconds()
    print(f"clean run: {len(clean)} rows ({dict(Counter(s for _, s in clean.values()))}), {parts} parts, "
          f"{shards} shards, {clean_run['seconds']:.1f} s (first batch after {startup_s:.1f} s), "
          f"exit {clean_run['rc']}", flush=True)
    assert record is not None and record["rows_written"] == len(clean), "the clean run's record disagrees"
    ctx = {"work": work, "sub": sub, "startup_s": startup_s, "clean": clean, "clean_rows": clean_rows,
           "clean_rc": clean_run["rc"], "parts": parts, "shards": shards, "duration": clean_run["seconds"],
           "keep": args.keep, "limit_s": max(300.0, 10 * clean_run["seconds"])}

    rng = random.Random(args.seed)
    modes = []
    while len(modes) < args.trials:  # every block of three trials covers the three modes, in random order
        modes += rng.sample(MODES, len(MODES))
    trials = []
    progress = tqdm(range(1, args.trials + 1), desc="trials", unit="trial", dynamic_ncols=True)
    for index in progress:
        trial = run_trial(index, modes[index - 1], rng, ctx)
        trials.append(trial)
        progress.set_postfix(identical=sum(t["identical"] for t in trials), differ=sum(not t["identical"]
                                                                                      for t in trials))
        tqdm.write(f"trial {index}: {trial['mode']} {trial['parameters']}: "
                   f"{'identical' if trial['identical'] else 'DIFFERS: ' + '; '.join(trial['reasons'])}")
    progress.close()
    total_s = time.monotonic() - started

    # The table and the verdict.
    header = ("trial", "mode", "kills", "rows before resume", "identical", "seconds")
    table = [(str(t["trial"]), t["mode"], t["parameters"], f"{t['rows_before_resume']}/{t['rows_total']}",
              "yes" if t["identical"] else "NO", f"{t['seconds']:.1f}") for t in trials]
    widths = [max(len(row[column]) for row in [header, *table]) for column in range(len(header))]
    print()
    for row in [header, tuple("-" * width for width in widths), *table]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
    identical = sum(t["identical"] for t in trials)
    kills = [kill for trial in trials for kill in trial["kills"]]
    landed = sum(kill["landed"] for kill in kills)
    print(f"\n{identical} of {len(trials)} identical ({total_s:.0f} s in all, clean run {clean_run['seconds']:.1f} s; "
          f"modes: {dict(Counter(t['mode'] for t in trials))}; kills landed: {landed} of {len(kills)}, "
          f"the others came after the run had finished)")
    for trial in trials:
        if not trial["identical"]:
            print(f"trial {trial['trial']} ({trial['mode']} {trial['parameters']}) differs, folder kept: "
                  f"{trial['folder']}")
            for reason in trial["reasons"]:
                print(f"  - {reason}")
            print("  reproduce:")
            for command in trial["reproduce"]:
                print(f"    {command}")

    target = identical_target(identical, len(trials))
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "argv": sys.argv,
               "seed": args.seed, "trials_requested": args.trials, "machine": info, "work": str(work),
               "slice": {"args": SLICE_ARGS, "submission_task": SUBMITTED_TASK},
               "kills_landed": landed, "kills": len(kills),
               "clean": {"seconds": clean_run["seconds"], "startup_s": round(startup_s, 2), "rc": clean_run["rc"],
                         "rows": len(clean), "parts": parts, "shards": shards,
                         "statuses": dict(Counter(s for _, s in clean.values()))},
               "trials": trials, "identical": identical, "total": len(trials), "seconds": round(total_s, 1),
               "targets": as_json([target])}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.results}")
    print_targets(f"kill-and-resume trials on {info['cpu']} ({info['usable_cores']} usable cores)", [target])
    if not args.keep and identical == len(trials):
        shutil.rmtree(work / "clean", ignore_errors=True)
    return 0 if identical == len(trials) else 1


if __name__ == "__main__":
    sys.exit(main())
