"""The gate on a target task: its constraints against the baseline's traces take the place of the GT's trace and
images, so the reference and an honest program choosing another method pass, and another model, skipping fixed
guidance or caching across calls fail with the constraint's name."""

import pytest
from target_programs import ALL_FIXED, PROGRAMS, target_catalog

from accelbench.builder import programs
from accelbench.builder.gate import Gate

pytestmark = pytest.mark.slow

TASK = "smoke-sd15-ddim-8-speedup"
# Returns what it rendered for the same prompts and seeds before, without running the pipeline again.
MEMO = PROGRAMS["baseline itself"]().replace("def generate(pipe, prompts, generators, height=HEIGHT, width=WIDTH):\n", (
    "_SEEN = {}\n\n\n"
    "def generate(pipe, prompts, generators, height=HEIGHT, width=WIDTH):\n"
    "    key = (tuple(prompts), tuple(g.initial_seed() for g in generators))\n"
    "    if key not in _SEEN:\n"
    "        _SEEN[key] = _render(pipe, prompts, generators, height, width)\n"
    "    return _SEEN[key]\n\n\n"
    "def _render(pipe, prompts, generators, height, width):\n"))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return target_catalog(tmp_path_factory.mktemp("catalog"), TASK, fixed=ALL_FIXED)


@pytest.fixture(scope="module")
def gate(catalog):
    with Gate(catalog, catalog.task(TASK), seed=11) as gate:
        yield gate


def test_the_reference_and_an_honest_other_method_pass_on_constraints_not_on_the_references_images(gate, catalog):
    for source in (programs.render(catalog, catalog.task(TASK)).source, PROGRAMS["ToMe (another method)"]()):
        verdict = gate.check(source)
        assert verdict.passed, verdict.reason
        names = [check.name for check in verdict.checks if not check.advisory]
        assert names == ["contract", "load", "output", "finite", "constraints", "independent", "repeatable"]
        assert verdict.check("constraints").reason == "every constraint kept"


@pytest.mark.parametrize("name, constraint", [("a smaller UNet", "model"), ("no guidance", "guidance"),
                                              ("half the resolution, upsampled", "resolution"),
                                              ("a second model in generate", "second model")])
def test_a_program_breaking_a_constraint_is_rejected_with_its_name(gate, name, constraint):
    verdict = gate.check(PROGRAMS[name]())
    assert verdict.failed_checks() == ["constraints"]
    assert verdict.check("constraints").observed == constraint
    assert verdict.reason.startswith("constraints: call 1 of 4 (2 images): " + constraint + ":"), verdict.reason


def test_caching_outputs_across_calls_is_rejected(gate):
    verdict = gate.check(MEMO)
    assert not verdict.passed
    assert verdict.reason.startswith("constraints: call 3 of 4 (2 images): resolution: the VAE decoded latents of "
                                     "nothing"), verdict.reason


def test_a_reference_that_breaks_its_tasks_constraints_does_not_pass(tmp_path):
    """T-GATE drops the unconditional branch after its gate step: no reference of a task that fixes guidance."""
    catalog = target_catalog(tmp_path, "smoke-sd15-ddim-8-tgate-target", reference="tgate",
                             params={"gate_step": 4})
    with Gate(catalog, catalog.task("smoke-sd15-ddim-8-tgate-target"), seed=11) as gate:
        verdict = gate.check(programs.render(catalog, catalog.task("smoke-sd15-ddim-8-tgate-target")).source)
    assert verdict.failed_checks() == ["constraints"] and "guidance:" in verdict.reason
