"""Numbers live in results, prose cites them: every calibrated constant must still cover the measurement it was
calibrated on (bench/results/*.json), and the README's tolerance table must be what the data and constants say.

A constant tightened below its measurement, a calibration rerun that widens the measured spread, or a README
edited by hand fails here."""

import json
import math
from pathlib import Path

import pytest

from accelbench.builder import gate
from accelbench.manifest import load_catalog

ROOT = Path(__file__).resolve().parents[1]
GATE = json.loads((ROOT / "bench" / "results" / "gate_calibration.json").read_text())
DEVIATION = json.loads((ROOT / "bench" / "results" / "deviation_calibration.json").read_text())
METHODS = load_catalog().methods
TOME = METHODS["tome"].gate_tolerance


def _psnr(value) -> float:
    return math.inf if value == "inf" else float(value)


def test_the_cpu_tolerance_covers_every_program_against_itself():
    summary = GATE["summary"]
    assert (summary["device"], summary["dtype"], summary["weights"]) == ("cpu", "float32", "tiny")
    assert gate.CPU_FP32.allows(summary["max_abs"], summary["max_mean_abs"])
    for row in GATE["rows"]:
        for case in ("batch", "threads"):
            if row[case] is not None:
                assert gate.CPU_FP32.allows(*row[case]), (row["program"], case, row[case])


def test_the_tome_tolerance_covers_another_merge_pattern_seed():
    summary = GATE["summary"]
    assert TOME is not None and TOME.when == "use_rand"
    assert TOME.max_abs >= summary["tome_seed_max_abs"] and TOME.mean_abs >= summary["tome_seed_max_mean_abs"]
    seeded = [row for row in GATE["rows"] if row["tome_seed"] is not None]
    assert seeded and all(TOME.max_abs >= row["tome_seed"][0] and TOME.mean_abs >= row["tome_seed"][1]
                          for row in seeded)


@pytest.mark.parametrize("row", DEVIATION["rows"], ids=lambda row: row["task"])
def test_no_honest_variation_deviates(row):
    """Each method's deviation threshold is below what the same computation with other numerics measured (another
    batch size or thread count) and, for ToMe, below another merge-pattern seed: honest programs never deviate."""
    threshold = METHODS[row["method"]].deviation_psnr_db
    honest = [_psnr(row["batch_size"]), _psnr(row["threads"])] + ([row["tome_seed"]] if "tome_seed" in row else [])
    assert all(threshold < value for value in honest), (threshold, honest)


def tolerance_table() -> list[str]:
    """The README's tolerance table, from the calibration data and the constants."""
    summary = GATE["summary"]
    return [
        "| case | measured | allowed (max \\|diff\\|, mean \\|diff\\|) |",
        "|---|---|---|",
        f"| CPU float32 | max {summary['max_abs']}, mean <= {summary['max_mean_abs']:g} over {summary['programs']} GT "
        f"and baseline programs (every smoke program; standard ones covering every family, method and sampler) | "
        f"{gate.CPU_FP32.max_abs}, {gate.CPU_FP32.mean_abs:g} |",
        f"| ToMe with `use_rand` (the merge-pattern seed is the program's choice) | another seed: max "
        f"{summary['tome_seed_max_abs']}, mean {summary['tome_seed_max_mean_abs']:.2f} | {TOME.max_abs}, "
        f"{TOME.mean_abs:g} |",
        f"| any other device or dtype (not calibrated) | – | {gate.UNCALIBRATED.max_abs}, "
        f"{gate.UNCALIBRATED.mean_abs:g} |",
    ]


def test_the_readme_tolerance_table_is_the_data():
    readme = (ROOT / "README.md").read_text().splitlines()
    expected = tolerance_table()
    start = readme.index(expected[0])
    assert readme[start:start + len(expected)] == expected
