"""The command line as a whole: every command has help and is documented; light imports stay light."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from accelbench.cli import main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_has_help_and_is_in_the_readme(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output
    assert f"accelbench {command}" in README


def test_help_tasks_and_the_scorer_do_not_import_torch_or_diffusers():
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "from accelbench.cli import main\n"
            "import accelbench.scorer.score, accelbench.scorer.report, accelbench.hub.stage, accelbench.hub.card\n"
            "for args in (['--help'], ['tasks'], ['validate']):\n"
            "    assert CliRunner().invoke(main, args).exit_code == 0, args\n"
            "heavy = sorted(m for m in ('torch', 'diffusers', 'open_clip', 'transformers') if m in sys.modules)\n"
            "print(','.join(heavy))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_makefile_targets_named_in_the_readme_exist():
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z]+):", makefile, flags=re.M))
    for target in set(re.findall(r"\bmake ([a-z]+)\b", README)):
        assert target in targets, target


def test_the_readme_layout_names_every_module():
    """Each module of the import root appears in the README's layout table (a package's modules in its row)."""
    root = Path(__file__).resolve().parents[1]
    layout = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for folder in ("accelbench", "builder", "scorer"):
        for path in sorted((root / folder).rglob("*.py")):
            if path.name in ("__init__.py", "__main__.py"):
                continue
            assert path.name in layout or path.stem in layout, path.relative_to(root)
