"""The report as one web page for people, ``DIR/report/index.html``, from the report's stored files alone.

What it shows: the leaderboard (sortable by clicking a column, numbers formatted as in ``report.md``; a tab per
task level when there are several), the caveats, the plots, one section per task (its image grid from
``grids/index.json`` when :func:`accelbench.scorer.grids.write_grids` drew one, its summary rows, flags,
leaderboard results and the reasons of its failed rows) and the provenance (hardware, versions, weights, CLIP
recipe, the submissions' ``submission.yaml``).

Self-contained: inline CSS and script, images by relative path, no network request. A Content-Security-Policy
allows no other origin and runs only the page's own script and style (by their sha256), so even a value that
escaped escaping could neither load nor run anything. Everything from a submission (names, reasons,
``submission.yaml``) is untrusted and goes through :func:`html.escape`. Each leaderboard row carries the exact
``leaderboard.csv`` values as ``data-<column>`` attributes, which the sorting reads and tests compare.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from html import escape
from pathlib import Path

from accelbench import dataset, schema
from accelbench.scorer import aggregate, grids, leaderboard, leaderboard_files, leaderboard_markdown, markdown, report

INDEX_HTML = "index.html"
PLOTS = ((report.PARETO_PNG, "Speedup vs quality loss per task"), (leaderboard_files.FAST_P_PNG, "fast_p curves"),
         (leaderboard_files.HEATMAP_PNG, "Speedup per task and submission"))
ENVIRONMENT_COLUMNS = ["variant", "task_id", "status", "error", "device", "device_name", "dtype", "weights", "timer",
                       "versions"]
LEADERBOARD_KEYS = {"Submission": "submission", "Rank": "rank", "Correct": "correct", "GT parity": "gt_parity",
                    "Geomean speedup": "geomean_speedup", "Quality loss": "quality_loss", "PSNR to GT (dB)": "psnr_gt",
                    "Identical to GT": "identical_to_gt", "Tied with": "tied_with", "Failures": "reasons"}

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:0 1.5em 3em;color:#1b1b1b}
table{border-collapse:collapse;margin:.6em 0;font-size:.86em}
th,td{border:1px solid #d0d0d0;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f0f0f0}th[data-key]{cursor:pointer}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tbody tr:nth-child(even){background:#fafafa}tr.reference{background:#eef5ff!important}
td.bad,.bad{color:#9a1b1b}code{font-family:ui-monospace,monospace;font-size:1em}.muted{color:#666}
.notes{background:#fff8e5;border-left:4px solid #e0a800;padding:.4em 1em}
[role=tablist] button{border:1px solid #bbb;background:#f4f4f4;padding:.3em .9em;cursor:pointer}
[role=tablist] button[aria-selected=true]{background:#fff;border-bottom-color:#fff;font-weight:bold}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}.plots img{max-width:580px}
img{max-width:100%;height:auto;border:1px solid #ddd}section.task{border-top:2px solid #ccc;margin-top:2em}
"""

SCRIPT = """
(function () {
  function cell(row, key) { return row.getAttribute("data-" + key) || ""; }
  function number(text) { return text === "inf" ? Infinity : text === "-inf" ? -Infinity : parseFloat(text); }
  function sortBy(table, key, descending) {
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cell(a, key), y = cell(b, key);
      if (x === "" || y === "") { return (x === "") - (y === ""); }  /* empty values last, either way */
      var p = number(x), q = number(y);
      var order = isNaN(p) || isNaN(q) ? x.localeCompare(y) : (p > q) - (p < q);
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    table.querySelectorAll("th[data-key]").forEach(function (th) {
      if (th.getAttribute("data-key") !== key) { th.removeAttribute("aria-sort"); return; }
      th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("th[data-key]").forEach(function (th) {
      var key = th.getAttribute("data-key");
      function sort() {
        var descending = th.getAttribute("aria-sort") !== "descending";
        sortBy(table, key, descending);
        if (table.id === "leaderboard") {
          try { history.replaceState(null, "", "#sort=" + key + (descending ? ":desc" : ":asc")); } catch (e) {}
        }
      }
      th.tabIndex = 0;
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (event) { if (event.key === "Enter") { sort(); } });
    });
    table.setAttribute("data-sortable", "ready");
  });
  /* #sort=KEY[:asc|:desc] opens the leaderboard sorted: a link to a sorted leaderboard. */
  var wanted = /^#sort=([A-Za-z0-9_]+)(?::(asc|desc))?$/.exec(location.hash);
  var board = document.getElementById("leaderboard");
  if (wanted && board && board.querySelector('th[data-key="' + wanted[1] + '"]')) {
    sortBy(board, wanted[1], wanted[2] !== "asc");
  }
  document.querySelectorAll("[role=tablist]").forEach(function (list) {
    var tabs = list.querySelectorAll("[role=tab]");
    function show(chosen) {
      tabs.forEach(function (tab) {
        tab.setAttribute("aria-selected", tab === chosen ? "true" : "false");
        document.getElementById(tab.getAttribute("aria-controls")).hidden = tab !== chosen;
      });
    }
    tabs.forEach(function (tab) { tab.addEventListener("click", function () { show(tab); }); });
    show(tabs[0]);
    list.setAttribute("data-tabs", "ready");
  });
  window.addEventListener("load", function () {
    var loaded = Array.prototype.filter.call(document.images, function (image) { return image.naturalWidth > 0; });
    document.body.setAttribute("data-images-loaded", loaded.length + "/" + document.images.length);
  });
})();
"""


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# No origin but the page's own folder (file: when opened from disk), and only this module's script and style.
CONTENT_SECURITY_POLICY = (f"default-src 'none'; img-src 'self' file: data:; style-src {_digest(STYLE)}; "
                           f"script-src {_digest(SCRIPT)}; base-uri 'none'; form-action 'none'")


@dataclass
class Inputs:
    """Everything the page shows, read from the dataset folder."""

    summary: dict  # summary.json
    pooled: list[dict]  # summary.csv, typed (SUMMARY_COLUMNS)
    board: leaderboard.Leaderboard | None
    board_csv: dict[str, dict[str, str]]  # variant -> leaderboard.csv row as written (strings)
    definitions: dict[str, str]  # leaderboard.json's, as the leaderboard was computed
    grid_index: dict  # grids/index.json
    rows: list[dict]  # generation rows, ENVIRONMENT_COLUMNS
    submissions: list[tuple[str, dict]]  # (name, submission.yaml) of the run records, distinct
    unreadable_runs: list[str]
    plots: list[tuple[str, str]]  # (file, caption) of the plots that exist


def _e(value) -> str:
    return "" if value is None else escape(str(value), quote=True)


def _attribute_value(value) -> str:
    """A typed value as a data attribute (what leaderboard.csv writes for it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def _anchor(task_id: str) -> str:
    return "task-" + re.sub(r"[^A-Za-z0-9_-]", "_", task_id)


def _table(header: list[str], rows: list[str], keys: list[str | None] | None = None, table_id: str = "") -> str:
    """A table of escaped ``header`` labels (sortable by the columns with a key) and ready ``<tr>`` rows."""
    keys = keys or [None] * len(header)
    cells = "".join(f'<th data-key="{_e(key)}">{_e(label)}</th>' if key else f"<th>{_e(label)}</th>"
                    for label, key in zip(header, keys))
    attributes = (f' id="{table_id}"' if table_id else "") + (' class="sortable"' if any(keys) else "")
    return f"<table{attributes}><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _row(cells: list[str], attributes: dict[str, str] | None = None, css: str = "") -> str:
    data = "".join(f' data-{name}="{_e(value)}"' for name, value in (attributes or {}).items())
    css = f' class="{css}"' if css else ""
    return f"<tr{css}{data}>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


# ---------------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------------


def leaderboard_section(board: leaderboard.Leaderboard, board_csv: dict[str, dict[str, str]],
                        definitions: dict[str, str]) -> str:
    """The leaderboard table (cells as report.md prints them), and a tab per task level when there are several;
    ``definitions``: those leaderboard.json was written with."""
    header, cells = leaderboard_markdown.table_rows(board)
    fast = {f"fast_{p:g}": schema.fast_column(p) for p in board.fast_p}
    keys = [LEADERBOARD_KEYS.get(label, fast.get(label)) for label in header]
    columns = [column.name for column in schema.leaderboard_columns(board.fast_p)]
    rows = []
    for row, row_cells in zip(board.rows, cells):
        name = (f"<strong>{_e(row['submission'])}</strong> <span class=muted>(reference)</span>" if row["reference"]
                else f"<code>{_e(row['submission'])}</code>")
        raw = board_csv.get(row["variant"], {})
        rows.append(_row([name] + [_e(cell) for cell in row_cells[1:]], {c: raw.get(c, "") for c in columns},
                         "reference" if row["reference"] else ""))
    table = _table(header, rows, keys, table_id="leaderboard")
    heading = (f"<h2 id=leaderboard-section>Leaderboard</h2><p>{len(board.rows) - 1} submission(s) on "
               f"{board.rows[0]['tasks'] if board.rows else 0} task(s), the GT first as the reference. Click a "
               f"column to sort.</p>")
    footer = ("<details><summary>Definitions</summary><ul>" + "".join(
        f"<li><b>{_e(name)}</b>: {_e(value)}</li>" for name, value in definitions.items()) + "</ul></details>")
    # The groups of the breakdown by level: str(level), '?' for an unknown method.
    levels = sorted({"?" if result["level"] is None else str(result["level"]) for result in board.tasks})
    if len(levels) < 2:
        return heading + table + footer
    panels = [("all", "All tasks", table)] + [(f"level-{index}", f"Level {level}", _level_panel(board, level))
                                             for index, level in enumerate(levels)]
    tabs = "".join(f'<button role=tab aria-controls="panel-{key}" type=button>{_e(label)}</button>'
                   for key, label, _ in panels)
    bodies = "".join(f'<div role=tabpanel id="panel-{key}"><h3>{_e(label)}</h3>{body}</div>'
                     for key, label, body in panels)
    return f"{heading}<div role=tablist>{tabs}</div>{bodies}{footer}"


def _level_panel(board: leaderboard.Leaderboard, level: str) -> str:
    """The breakdown rows of one level (without CIs, as report.md's breakdown) and links to its tasks."""
    fast = [schema.fast_column(p) for p in board.fast_p]
    header = ["Submission", "Correct"] + [f"fast_{p:g}" for p in board.fast_p] + ["GT parity", "Geomean speedup"]
    keys = ["submission", "correct", *fast, "gt_parity", "geomean_speedup"]
    rows = [_row([f"<code>{_e(row['submission'])}</code>", f"{row['correct']}/{row['tasks']}"]
                 + [markdown.number(row[name]) for name in fast]
                 + [markdown.number(row["gt_parity"]), markdown.number(row["geomean_speedup"], suffix="×")],
                 {key: _attribute_value(row[key]) for key in keys} | {"level": level})
            for row in board.breakdown if row["by"] == "level" and row["group"] == level]
    tasks = sorted({r["task_id"] for r in board.tasks if ("?" if r["level"] is None else str(r["level"])) == level})
    return _table(header, rows, keys) + "<p>Tasks: " + ", ".join(
        f'<a href="#{_anchor(task)}"><code>{_e(task)}</code></a>' for task in tasks) + "</p>"


def _quality_loss(row: dict) -> str:
    """As report.md shows it: 'n/a' where undefined (0/0), '–' where unscored."""
    undefined = aggregate.UNDEFINED_QUALITY_LOSS in (row.get("undefined") or "").split(";")
    return markdown.with_ci(row, "quality_loss", suffix=" %", scale=100.0, undefined="n/a" if undefined else "–")


def task_section(task_id: str, summary_rows: list[dict], results: list[dict], failures: Counter, grid: dict | None,
                 sampled: bool = False) -> str:
    """One task: its grid (``sampled``: other tasks have one), its summary rows, its leaderboard results and the
    reasons of its failed rows."""
    first = next((row for row in summary_rows if row["variant"] != schema.BASELINE), summary_rows[0])
    parts = [f'<section class=task id="{_anchor(task_id)}"><h3><code>{_e(task_id)}</code></h3>',
             f"<p>{_e(first['model'])} · {_e(first['scheduler'])} · {_e(first['steps'])} steps · "
             f"{_e(first['method'])} <code>{_e(first['method_params'])}</code></p>"]
    if grid:
        parts.append(f'<figure><img src="{_e(grids.GRIDS_DIR + "/" + grid["file"])}" width="{_e(grid["width"])}" '
                     f'height="{_e(grid["height"])}" alt="images of {_e(task_id)}"><figcaption>Columns: '
                     f'{_e(", ".join(grid["columns"]))}; rows: {len(grid["rows"])} (prompt, seed) pairs at batch '
                     f'size {_e(grid["rows"][0]["batch_size"] if grid["rows"] else "–")}.</figcaption></figure>')
    elif sampled:
        parts.append("<p class=muted>No image grid: the task is not among the tasks the grids sample.</p>")
    parts.append(_table(
        ["Variant", "Images", "Failed", "Speedup [95 % CI]", "Denoise speedup", "CLIP", "Quality loss [95 % CI]",
         "PSNR (dB)", "SSIM", "Identical", "Drift PSNR (dB)", "Flags"],
        [_row([f"<code>{_e(row['variant'])}</code>", _e(row["images"]), _e(row["failed"]),
               _e(markdown.with_ci(row, "speedup", suffix="×")),
               _e(markdown.with_ci(row, "denoise_speedup", suffix="×")),
               _e(markdown.number(row["clip_score"])), _e(_quality_loss(row)), _e(markdown.number(row["psnr"], 1)),
               _e(markdown.number(row["ssim"], 3)), _e(row["identical_to_baseline"]),
               _e(markdown.number(row["drift_psnr"], 1)), _e((row["flags"] or "").replace(";", ", "))],
              {"variant": row["variant"], "flags": row["flags"] or ""}) for row in summary_rows]))
    if results:
        parts.append("<h4>Leaderboard results</h4>" + _table(
            ["Submission", "Correct", "Speedup [95 % CI]", "GT speedup", "Quality loss", "PSNR to GT", "Reaches GT",
             "Reason"],
            [_row([f"<code>{_e(r['submission'])}</code>", _e(r["correct"]),
                   _e(markdown.with_ci(r, "speedup", suffix="×")),
                   _e(markdown.number(r["gt_speedup"], suffix="×")),
                   _e(markdown.number(r["quality_loss"], 1, " %", 100.0)), _e(markdown.number(r["psnr_gt"], 1)),
                   _e(r["reaches_gt"]), f"<span class=bad>{_e(r['reason'])}</span>" if r["reason"] else ""],
                  {"submission": r["submission"], "correct": _attribute_value(r["correct"])}) for r in results]))
    if failures:
        parts.append("<h4>Failed rows</h4><ul>" + "".join(
            f"<li><code>{_e(variant)}</code>: {_e(status)} × {count}" + (f": {_e(error)}" if error else "") + "</li>"
            for (variant, status, error), count in sorted(failures.items(), key=lambda item: str(item[0]))) + "</ul>")
    return "".join(parts) + "</section>"


def provenance_section(inputs: Inputs) -> str:
    """Where the numbers come from: hardware, weights, recipe, versions, the submissions' own descriptions."""
    rows = inputs.rows
    recipe = inputs.summary.get("recipe") or {}
    meta = inputs.board.meta if inputs.board else {}

    def distinct(column):
        return ", ".join(sorted({str(row[column]) for row in rows if row[column]})) or "–"

    facts = [("Hardware", distinct("device_name")), ("Device", distinct("device")), ("dtype", distinct("dtype")),
             ("Timer", distinct("timer")), ("Weights", distinct("weights")),
             ("CLIP recipe", f"{recipe.get('recipe_id')}: open_clip {recipe.get('clip_model')} / "
                             f"{recipe.get('clip_pretrained')}" if recipe else "none"),
             ("Confidence intervals", inputs.summary.get("bootstrap") or "–")]
    if meta:
        facts += [("Datasets", ", ".join(meta.get("datasets", []))), ("Gated", str(meta.get("gated"))),
                  ("Baseline programs", "; ".join(f"{setting}: {', '.join(sha[:12] for sha in shas)}"
                                                  for setting, shas in meta.get("baselines", {}).items()))]
    parts = ["<section id=provenance><h2>Provenance</h2>",
             _table(["", ""], [_row([f"<b>{_e(name)}</b>", _e(value)]) for name, value in facts])]
    versions = markdown.versions(rows)
    if versions:
        parts.append("<h3>Versions</h3>" + _table(["Package", "Version"], [
            _row([_e(package), _e(", ".join(found))]) for package, found in versions.items()]))
    if inputs.submissions:
        fields = ["author", "model", "date", "notes"]
        parts.append("<h3>Submissions (their own submission.yaml, unverified)</h3>" + _table(
            ["Name", *fields], [_row([f"<code>{_e(name)}</code>"] + [_e(info.get(key)) for key in fields],
                                     {"submission": name}) for name, info in inputs.submissions]))
    if inputs.unreadable_runs:
        parts.append(f"<p class=bad>Unreadable run records: {_e(', '.join(inputs.unreadable_runs))}</p>")
    return "".join(parts) + "</section>"


def _task_rows(pooled: list[dict], task_id: str) -> list[dict]:
    """The task's summary rows, one per variant (summary.csv repeats its baseline's beside each variant), in the
    grids' column order."""
    first: dict[str, dict] = {}
    for row in pooled:
        if row["task_id"] == task_id:
            first.setdefault(row["variant"], row)
    return [first[variant] for variant in grids.variant_order(first) if variant in first]


def render_page(inputs: Inputs) -> str:
    """The whole page."""
    summary, board = inputs.summary, inputs.board
    title = f"accelbench report: {summary.get('suite')}"
    tasks = list(dict.fromkeys(row["task_id"] for row in inputs.pooled if row["task_id"]))
    failed = sum(1 for row in inputs.rows if row["status"] != schema.STATUS_OK)
    body = [f"<h1>{_e(title)}</h1>",
            f"<p>{len(inputs.rows)} images ({failed} failed), {len(tasks)} task(s); weights "
            f"<b>{_e(summary.get('weights'))}</b>, dtype {_e(summary.get('dtype_policy'))}.</p>"]
    notes = list(summary.get("notes") or []) + (board.notes if board else [])
    if notes:
        body.append("<div class=notes><b>Read this first</b><ul>" + "".join(f"<li>{_e(note)}</li>" for note in notes)
                    + "</ul></div>")
    body.append("<nav><a href=#leaderboard-section>Leaderboard</a> · <a href=#plots>Plots</a> · <a href=#tasks>"
                "Tasks</a> · <a href=#provenance>Provenance</a></nav>")
    body.append(leaderboard_section(board, inputs.board_csv, inputs.definitions) if board else
                "<h2 id=leaderboard-section>Leaderboard</h2><p>No submissions in this dataset.</p>")
    body.append("<h2 id=plots>Plots</h2><div class=plots>" + "".join(
        f'<figure><img src="{_e(name)}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'
        for name, caption in inputs.plots) + "</div>")
    failures: dict[str, Counter] = {}
    for row in inputs.rows:
        if row["status"] != schema.STATUS_OK and row["task_id"]:
            failures.setdefault(row["task_id"], Counter())[row["variant"], row["status"], row["error"]] += 1
    body.append("<h2 id=tasks>Tasks</h2><ul>" + "".join(
        f'<li><a href="#{_anchor(task)}"><code>{_e(task)}</code></a></li>' for task in tasks) + "</ul>")
    for task in tasks:
        body.append(task_section(task, _task_rows(inputs.pooled, task),
                                 [r for r in board.tasks if r["task_id"] == task] if board else [],
                                 failures.get(task, Counter()), inputs.grid_index["tasks"].get(task),
                                 sampled=bool(inputs.grid_index["tasks"])))
    body.append(provenance_section(inputs))
    return (f'<!DOCTYPE html><html lang=en><head><meta charset=utf-8>'
            f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
            f'<meta name=viewport content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}<script>{SCRIPT}</script></body></html>\n")


# ---------------------------------------------------------------------------------------------------------
# Reading and writing
# ---------------------------------------------------------------------------------------------------------


def _submissions(directory: Path) -> tuple[list[tuple[str, dict]], list[str]]:
    """The distinct (name, submission.yaml) of the run records, and the run records that cannot be read."""
    found, unreadable = {}, []
    for path in sorted((directory / schema.RUNS_DIR).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            unreadable.append(path.name)
            continue
        for name, info in (record.get("submissions") or {}).items():
            info = info if isinstance(info, dict) else {}
            found.setdefault((str(name), json.dumps(info, sort_keys=True, default=str)), info)
    return [(name, info) for (name, _), info in sorted(found.items())], unreadable


def read_inputs(directory: Path) -> Inputs:
    """What the page of ``directory`` shows; raises :class:`accelbench.dataset.DatasetError` without a report."""
    directory = Path(directory)
    folder = directory / schema.REPORT_DIR
    path = folder / report.SUMMARY_JSON
    if not path.is_file():
        raise dataset.DatasetError(f"{path}: no report summary: run `accelbench report` on {directory}")
    board, board_csv, definitions = None, {}, {}
    if (folder / leaderboard_files.LEADERBOARD_JSON).is_file():
        board = leaderboard_files.read(directory)
        definitions = json.loads((folder / leaderboard_files.LEADERBOARD_JSON).read_text()).get("definitions", {})
        with open(folder / leaderboard_files.LEADERBOARD_CSV, newline="") as file:
            board_csv = {row["variant"]: row for row in csv.DictReader(file)}
    submissions, unreadable = _submissions(directory)
    return Inputs(summary=json.loads(path.read_text()), pooled=report.read_summary(directory).to_pylist(),
                  board=board, board_csv=board_csv, definitions=definitions, grid_index=grids.read_index(directory),
                  rows=dataset.read_generations(directory, ENVIRONMENT_COLUMNS).to_pylist(),
                  submissions=submissions, unreadable_runs=unreadable,
                  plots=[(name, caption) for name, caption in PLOTS if (folder / name).is_file()])


def write_html_report(directory: Path) -> Path:
    """Write ``DIR/report/index.html`` from the report files :func:`accelbench.scorer.report.build_report` (and
    :func:`accelbench.scorer.grids.write_grids`, when run) wrote; return its path."""
    path = Path(directory) / schema.REPORT_DIR / INDEX_HTML
    dataset.write_bytes_atomic(path, render_page(read_inputs(directory)).encode())
    return path
