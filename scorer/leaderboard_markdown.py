"""The leaderboard in Markdown, for ``report.md`` and the dataset card: its table, definitions, breakdown and
failed tasks. Every field that comes from a submission is escaped by :func:`accelbench.scorer.markdown.cell`."""

from __future__ import annotations

from accelbench import schema
from accelbench.manifest import LEVELS
from accelbench.scorer import markdown
from accelbench.scorer.leaderboard import Leaderboard, definitions
from accelbench.scorer.leaderboard_files import FAST_P_PNG, HEATMAP_PNG, PAIRS_CSV


def _fraction(row: dict, column: str) -> str:
    return markdown.with_ci(row, column, n=row["tasks"])


def table_rows(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """The leaderboard table of report.md and the dataset card: header and cells, from the leaderboard rows."""
    header = (["Submission", "Rank", "Correct"] + [f"fast_{p:g}" for p in board.fast_p]
              + ["Solved by level", "GT parity", "Geomean speedup", "Quality loss", "PSNR to GT (dB)",
                 "Identical to GT", "Tied with", "Failures"])
    cells = []
    for row in board.rows:
        name = f"**{row['submission']}** (reference)" if row["reference"] else f"`{row['submission']}`"
        cells.append([name, rank_range(row), f"{row['correct']}/{row['tasks']}"]
                     + [_fraction(row, schema.fast_column(p)) for p in board.fast_p]
                     + [solved_by_level(row), _fraction(row, "gt_parity"),
                        markdown.with_ci(row, "geomean_speedup", suffix="×"),
                        markdown.with_ci(row, "quality_loss", suffix=" %", scale=100.0, undefined="n/a"),
                        markdown.number(row["psnr_gt"], 1) + (f" (n={row['psnr_gt_n']})" if row["psnr_gt_n"] else ""),
                        markdown.number(row["identical_to_gt"], 0, " %", 100.0),
                        (row["tied_with"] or "").replace(";", ", "), (row["reasons"] or "").replace(";", ",")])
    return header, cells


def solved_by_level(row: dict) -> str:
    """A leaderboard row's tasks solved per level that has tasks, as counts (the CIs are in the breakdown).

    Example:
        >>> solved_by_level({"pass_l1": 1.0, "pass_l1_n": 2, "pass_l2": None, "pass_l2_n": 0, "pass_l4": 0.25,
        ...                  "pass_l4_n": 4})
        'L1 2/2 · L4 1/4'
    """
    parts = []
    for level in LEVELS:
        name, n = schema.level_column(level), row.get(f"{schema.level_column(level)}_n")
        if n:
            parts.append(f"L{level} {round(row[name] * n)}/{n}")
    return " · ".join(parts) or "–"


def rank_range(row: dict) -> str:
    """A leaderboard row's rank with the range of ranks consistent with its ties; '–' for the reference.

    Example:
        >>> rank_range({"rank": 2, "rank_low": 1, "rank_high": 3}), rank_range({"rank": 1, "rank_low": 1,
        ...                                                                    "rank_high": 1})
        ('2 (1–3)', '1')
        >>> rank_range({"rank": None, "rank_low": None, "rank_high": None})
        '–'
    """
    if row["rank"] is None:
        return "–"
    if row["rank_low"] == row["rank_high"]:
        return str(row["rank"])
    return f"{row['rank']} ({row['rank_low']}–{row['rank_high']})"


def markdown_section(board: Leaderboard, heading: str = "##", images: bool = True, image_dir: str = "") -> str:
    header, cells = table_rows(board)
    d = definitions(board)
    lines = [f"{heading} Leaderboard", "",
             f"{len(board.rows) - 1} submission(s) on {board.rows[0]['tasks'] if board.rows else 0} task(s), "
             f"the GT first as the reference. Timings on {', '.join(board.meta.get('device_names') or ['?'])}; "
             f"weights {board.meta.get('weights')}.", "",
             markdown.table(header, cells), "",
             f"- **Correct**: {d['correct']}.",
             f"- **fast_p**: {d['fast_p']}. **GT parity**: {d['gt_parity']}. **Geomean speedup**: "
             f"{d['geomean_speedup']}. Quality loss, PSNR and identical images: over the correct tasks.",
             f"- **Confidence intervals**: {d['resampling']}; n beside each. n/a: no CI, or undefined.",
             f"- **Rank**: {d['rank']} (every pair in `{PAIRS_CSV}`; `accelbench compare` prints one per task).",
             f"- **Level**: {d['level']}. **Solved by level**: {d['solved_by_level']}."]
    lines += [f"- {note}" for note in board.notes]
    if images:
        lines += ["", f"![fast_p curves]({image_dir}{FAST_P_PNG})", "",
                  f"![speedup per task and submission]({image_dir}{HEATMAP_PNG})"]
    lines += ["", f"{heading}# Breakdown", "",
              markdown.table(["By", "Group", "Submission", "Correct", "Solved [95 % CI]"]
                             + [f"fast_{p:g}" for p in board.fast_p] + ["GT parity", "Geomean speedup"],
                             [[row["by"], row["group"], row["submission"], f"{row['correct']}/{row['tasks']}",
                               markdown.with_ci(row, "solved") if "solved" in row else "–"]
                              + [markdown.number(row[schema.fast_column(p)]) for p in board.fast_p]
                              + [markdown.number(row["gt_parity"]), markdown.number(row["geomean_speedup"], suffix="×")]
                              for row in board.breakdown])]
    failed = [result for result in board.tasks if not result["correct"]]
    if failed:
        lines += ["", f"{heading}# Failed tasks", "", markdown.table(
            ["Submission", "Task", "Reason"],
            [[result["submission"], f"`{result['task_id']}`", result["reason"]] for result in failed])]
    return "\n".join(lines) + "\n"
