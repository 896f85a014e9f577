"""Manifests: the packaged catalogue, task text round trips, and one-line errors for malformed manifests."""

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from accelbench.cli import main
from accelbench.manifest import (
    BASELINE_METHOD,
    LEVELS,
    PIPELINE_LEVEL,
    TAG_SWEEP,
    load_catalog,
    parse_task_text,
    render_target_text,
    render_task_text,
)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_standard_suite_covers_every_method_on_every_family_it_applies_to(catalog):
    standard = [catalog.tasks[task_id] for task_id in catalog.suite("standard").tasks]
    assert len(standard) >= 60
    pairs = Counter((task.model, task.method) for task in standard)
    for model in ("sd15", "sdxl"):
        for method in ("deepcache", "tome", "tgate", "deepcache_tgate"):
            assert pairs[(model, method)] >= 5, (model, method)
    for model in ("pixart-alpha", "pixart-sigma"):
        assert pairs[(model, "tgate")] >= 5
    # every method a family binds has tasks on it in the standard suite, and no other method does
    for model in catalog.models.values():
        assert {method for (family, method) in pairs if family == model.id} == set(model.methods), model.id
    assert len({task.scheduler for task in standard}) >= 6
    assert {20, 25, 50} <= {task.steps for task in standard}


DIFFBENCH_LEVELS = {1: 41, 2: 116, 3: 261, 4: 93, 5: 93}  # DiffBench's task counts per level (arXiv 2601.03178)


def test_the_standard_suite_is_at_the_fields_breadth(catalog):
    """At least 600 tasks, no level below DiffBench's count, every combination on every UNet family it applies to
    at each of the family's recipe settings three times (at its defaults, gentler and more aggressive)."""
    standard = [catalog.tasks[task_id] for task_id in catalog.suite("standard").tasks]
    levels = Counter(task.level for task in standard)
    assert sum(levels.values()) >= 600
    assert all(levels[level] >= count for level, count in DIFFBENCH_LEVELS.items()), levels
    recipe_settings = {(task.model, task.scheduler, task.steps) for task in standard if task.level == 2
                       and not catalog.methods[task.method].sets_sampler}
    for model, scheduler, steps in recipe_settings:
        combined = Counter(task.method for task in standard if task.level == 3
                           and (task.model, task.scheduler, task.steps) == (model, scheduler, steps))
        if "deepcache" not in catalog.models[model].methods:
            continue
        combinations = {name for name in catalog.models[model].methods if len(catalog.methods[name].components) > 1}
        assert combinations == {"deepcache_tgate", "deepcache_tome", "tome_tgate", "deepcache_tome_tgate"}
        assert combined == dict.fromkeys(combinations, 3), (model, scheduler, steps)


def test_levels_are_the_fields_and_every_family_and_sampler_has_a_pipeline_task(catalog):
    """Level 1: no acceleration; 2: one method; 3: a combination; a parameter away from its default is a tag;
    4 and 5: a target task's (its reference program's method says nothing about its level)."""
    for task in catalog.tasks.values():
        if task.target is not None:
            assert task.level == task.target.level in (4, 5), task.id
            continue
        method = catalog.methods[task.method]
        expected = PIPELINE_LEVEL if task.method == BASELINE_METHOD else 3 if len(method.components) > 1 else 2
        assert task.level == expected and task.level in LEVELS, task.id
        swept = any(task.params[name] != spec.default for name, spec in method.params.items())
        assert task.tags == ((TAG_SWEEP,) if swept else ()), task.id
    standard = [catalog.tasks[task_id] for task_id in catalog.suite("standard").tasks]
    pipelines = {(task.model, task.scheduler) for task in standard if task.level == PIPELINE_LEVEL}
    assert pipelines == {(task.model, task.scheduler) for task in standard if task.target is None}
    settings = Counter(task.setting_id for task in standard)
    # every (family, sampler) has a pipeline task on a setting its acceleration tasks use (a shared baseline)
    assert pipelines == {(task.model, task.scheduler) for task in standard
                         if task.level == PIPELINE_LEVEL and settings[task.setting_id] > 1}
    assert {TAG_SWEEP} == {tag for task in standard for tag in task.tags}


def test_tasks_lists_and_filters_by_level(catalog):
    runner = CliRunner()
    listed = runner.invoke(main, ["tasks", "--level", "1", "--json"])
    assert listed.exit_code == 0
    entries = [json.loads(line) for line in listed.output.splitlines()]
    assert entries and {entry["level"] for entry in entries} == {1}
    assert len(entries) == sum(task.level == 1 for task in catalog.tasks.values())
    table = runner.invoke(main, ["tasks", "--suite", "standard", "--level", "2", "--level", "3"])
    assert table.exit_code == 0 and " L1 " not in table.output and "L2,sweep" in table.output
    refused = runner.invoke(main, ["tasks", "--level", "6"])
    assert refused.exit_code == 2 and "error: Invalid value for '--level': 6 is not in the range 1<=x<=5" in (
        refused.output)


def test_the_timing_suites_repeat_with_fresh_workers_by_default(catalog):
    assert (catalog.suite("timing").repeats, catalog.suite("standard").repeats, catalog.suite("smoke").repeats) == (
        3, 3, 1)


def test_every_task_text_parses_back_to_its_fields(catalog):
    """A recipe task's text parses back to its fields; a target task's (which names no method) is rendered from
    its target."""
    for task in catalog.tasks.values():
        if task.target is not None:
            assert task.text == render_target_text(catalog.models[task.model], catalog.schedulers[task.scheduler],
                                                   task.steps, task.target), task.id
            continue
        parsed = parse_task_text(task.text, catalog.models, catalog.schedulers, catalog.methods)
        assert parsed == {"model": task.model, "scheduler": task.scheduler, "steps": task.steps,
                          "method": task.method, "params": task.params}, task.id


def test_task_text_is_rendered_from_the_fields(catalog):
    task = catalog.task("sd15-ddim-25-deepcache")
    assert task.text == ("Generate a SD1.5 pipeline using the DDIM sampler with 25 steps and DeepCache acceleration "
                         "(cache_interval=3, cache_branch_id=0).")
    baseline = render_task_text(catalog.models["sdxl"], catalog.schedulers["euler"], 20, catalog.methods["none"], {})
    assert baseline == "Generate a SDXL pipeline using the Euler sampler with 20 steps and no acceleration."
    assert parse_task_text(baseline, catalog.models, catalog.schedulers, catalog.methods)["method"] == "none"


def test_sdxl_tome_tasks_avoid_the_no_op_setting(catalog):
    sdxl_tome = [task for task in catalog.tasks.values() if task.model == "sdxl" and task.method == "tome"]
    assert sdxl_tome and all(task.params["max_downsample"] >= 2 for task in sdxl_tome)


def test_a_composition_inherits_its_components_parameters_tolerance_and_threshold(catalog):
    methods = catalog.methods
    triple = methods["deepcache_tome_tgate"]
    assert triple.components == ("deepcache", "tome", "tgate")
    # the components' parameters in their order, each the component's own spec
    assert list(triple.params) == [*methods["deepcache"].params, *methods["tome"].params, *methods["tgate"].params]
    assert all(triple.params[name] is spec for part in ("deepcache", "tome", "tgate")
               for name, spec in methods[part].params.items())
    # ToMe's merge-pattern freedom comes along, and the most permissive deviation threshold (ToMe's 15 dB)
    assert triple.gate_tolerance == methods["tome"].gate_tolerance
    assert triple.deviation_psnr_db == min(methods[part].deviation_psnr_db for part in triple.components)
    # a parameter a composition lists replaces the inherited one (DeepCache+T-GATE searches fewer intervals)
    combined = methods["deepcache_tgate"]
    assert combined.params["cache_interval"].search == (2, 3, 5) != methods["deepcache"].params["cache_interval"].search
    assert combined.params["sp_interval"] is methods["tgate"].params["sp_interval"]
    assert list(combined.params) == [*methods["deepcache"].params, *methods["tgate"].params]


def test_tasks_json_prints_one_object_per_task(catalog):
    result = CliRunner().invoke(main, ["tasks", "--suite", "standard", "--json"])
    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(objects) == len(catalog.suite("standard").tasks)
    assert {"id", "text", "model", "scheduler", "steps", "method", "params"} <= set(objects[0])
    assert objects[0]["steps"] == catalog.task(objects[0]["id"]).steps


def test_validate_accepts_the_packaged_manifests_and_an_extra_task_file(tmp_path):
    extra = tmp_path / "extra.yaml"
    text = render_task_text(*_fields("sd15", "unipc", 30, "deepcache", {"cache_interval": 4, "cache_branch_id": 0}))
    extra.write_text(yaml.safe_dump({"tasks": [{"id": "my-task", "model": "sd15", "scheduler": "unipc", "steps": 30,
                                                "method": "deepcache", "params": {"cache_interval": 4},
                                                "text": text}]}))
    result = CliRunner().invoke(main, ["validate", str(extra)])
    assert result.exit_code == 0, result.output
    assert "ok:" in result.output


def _fields(model, scheduler, steps, method, params):
    catalog = load_catalog()
    return catalog.models[model], catalog.schedulers[scheduler], steps, catalog.methods[method], params


# ---------------------------------------------------------------------------------------------------------
# Malformed manifests: each gives one line "error: FILE: KEY: problem" and exit code 2, no traceback.
# ---------------------------------------------------------------------------------------------------------


def _edit(relative, change):
    """A mutation of one manifest file: ``change`` edits the parsed YAML in place."""
    return relative, change


def _set(path, value):
    def change(data):
        *parents, last = path
        target = data
        for key in parents:
            target = target[key]
        target[last] = value
    return change


def _task(index, **updates):
    def change(data):
        data["tasks"][index].update(updates)
    return change


MALFORMED = {
    "unknown model key": (_edit("models.yaml", _set(["models", "sd15", "resolutoin"], 512)),
                          "models.yaml: models.sd15.resolutoin: unknown key 'resolutoin' (did you mean 'resolution'?)"),
    "resolution not an integer": (_edit("models.yaml", _set(["models", "sd15", "resolution"], "512px")),
                                  "models.sd15.resolution: must be an integer, got a string '512px'"),
    "resolution not a multiple of 8": (_edit("models.yaml", _set(["models", "sdxl", "resolution"], 1020)),
                                       "models.sdxl.resolution: must be a multiple of 8"),
    "deepcache on a transformer model": (
        _edit("models.yaml", _set(["models", "pixart-alpha", "methods", "deepcache"], {})),
        "models.pixart-alpha.methods.deepcache: method 'deepcache' needs a unet denoiser"),
    "tgate binding without loader": (_edit("models.yaml", _set(["models", "sd15", "methods", "tgate"], {})),
                                     "models.sd15.methods.tgate.loader: missing required key"),
    "template escaping builder/templates": (_edit("methods.yaml", _set(["methods", "deepcache", "template"],
                                                                     "../../../x")),
                                            "methods.deepcache.template: '../../../x' is not a template in "
                                            "builder/templates"),
    "template that does not exist": (_edit("methods.yaml", _set(["methods", "tome", "template"], "tomme")),
                                     "methods.tome.template: 'tomme' is not a template in builder/templates"),
    "needs_loader not a boolean": (_edit("methods.yaml", _set(["methods", "tgate", "needs_loader"], "yes")),
                                   "methods.tgate.needs_loader: must be"),
    "unknown method in a model": (_edit("models.yaml", _set(["models", "sd15", "methods", "tgat"], {})),
                                  "models.sd15.methods.tgat: unknown key 'tgat' (did you mean 'tgate'?)"),
    "unknown parameter type": (
        _edit("methods.yaml", _set(["methods", "tome", "params", "ratio", "type"], "flaot")),
        "methods.tome.params.ratio.type: unknown parameter type 'flaot' (did you mean 'float'?)"),
    "default outside its bounds": (
        _edit("methods.yaml", _set(["methods", "deepcache", "params", "cache_interval", "default"], 0)),
        "methods.deepcache.params.cache_interval.default: must be >= 1, got 0"),
    "bound naming no parameter": (
        _edit("methods.yaml", _set(["methods", "tgate", "params", "warm_up", "max"], "gate_stp")),
        "methods.tgate.params.warm_up.max: bound 'gate_stp' is neither a number, 'steps' nor a parameter "
        "(did you mean 'gate_step'?)"),
    "single method without params": (
        _edit("methods.yaml", lambda data: data["methods"]["tome"].pop("params")),
        "methods.tome: missing key 'params' (only a composition, with components, inherits its parameters)"),
    "composition of an unknown method": (
        _edit("methods.yaml", _set(["methods", "deepcache_tome", "components"], ["deepcache", "tomee"])),
        "methods.deepcache_tome.components[1]: 'tomee' is not a single acceleration method of this file"),
    "sets_sampler without a sampler parameter": (
        _edit("methods.yaml", _set(["methods", "deepcache", "sets_sampler"], True)),
        "methods.deepcache.params.sampler: a method that sets_sampler needs a str parameter 'sampler' with choices"),
    "a sampler choice that is no scheduler": (
        _edit("methods.yaml", _set(["methods", "step_reduction", "params", "sampler", "choices"],
                                   ["dpmpp_2m", "unipcc"])),
        "methods.step_reduction.params.sampler.choices[1]: unknown scheduler 'unipcc' (did you mean 'unipc'?)"),
    "a suite extending an unknown suite": (_edit("suites/sd15.yaml", _set(["suite", "extends"], "standrd")),
                                            "suite.extends: unknown suite 'standrd' (did you mean 'standard'?)"),
    "suites extending each other": (_edit("suites/standard.yaml", _set(["suite", "extends"], "sd15")),
                                    "suite.extends: suites extend each other in a cycle: standard -> sd15 -> standard"),
    "scheduler class not a scheduler": (_edit("schedulers.yaml", _set(["schedulers", "ddim", "class"], "DDIM")),
                                        "schedulers.ddim.class: must name a diffusers scheduler class"),
    "unknown scheduler key": (_edit("schedulers.yaml", _set(["schedulers", "ddim", "clas"], "x")),
                              "schedulers.ddim.clas: unknown key 'clas' (did you mean 'class'?)"),
    "steps zero": (_edit("tasks/sd15.yaml", _task(0, steps=0)),
                   "tasks[0] (sd15-ddim-25-deepcache).steps: must be >= 1, got 0"),
    "steps negative": (_edit("tasks/sd15.yaml", _task(1, steps=-5)), ".steps: must be >= 1, got -5"),
    "steps a string": (_edit("tasks/sd15.yaml", _task(0, steps="25")), ".steps: must be an integer, got a string '25'"),
    "unknown scheduler": (_edit("tasks/sd15.yaml", _task(0, scheduler="dpmpp2m")),
                          ".scheduler: unknown scheduler 'dpmpp2m' (did you mean 'dpmpp_2m'?)"),
    "unknown model": (_edit("tasks/sd15.yaml", _task(0, model="sd-15")),
                      ".model: unknown model 'sd-15' (did you mean 'sd15'?)"),
    "method not for the model": (
        _edit("tasks/pixart.yaml", _task(0, method="tome")),
        ".method: method 'tome' does not apply to model 'pixart-alpha' (applies: none, step_reduction, tgate)"),
    "duplicate task id": (_edit("tasks/sdxl.yaml", _task(0, id="sd15-ddim-25-deepcache")),
                          "duplicate task id 'sd15-ddim-25-deepcache', first defined in"),
    "text disagrees with steps": (
        _edit("tasks/sd15.yaml", _task(0, text="Generate a SD1.5 pipeline using the DDIM sampler with 20 steps and "
                                                "DeepCache acceleration (cache_interval=3, cache_branch_id=0).")),
        "text says steps 20 but the task has steps: 25"),
    "text disagrees with method": (
        _edit("tasks/sd15.yaml", _task(0, text="Generate a SD1.5 pipeline using the DDIM sampler with 25 steps and "
                                                "no acceleration.")),
        "text says method 'none' but the task has method: 'deepcache'"),
    "unknown method parameter": (_edit("tasks/sd15.yaml", _task(0, params={"cache_intervall": 2})),
                                 ".params.cache_intervall: unknown parameter 'cache_intervall' for method 'deepcache' "
                                 "(did you mean 'cache_interval'?)"),
    "parameter of the wrong type": (_edit("tasks/sd15.yaml", _task(0, params={"cache_interval": 2.5})),
                                    ".params.cache_interval: must be an integer (int), got a number 2.5"),
    "gate step beyond the steps": (_edit("tasks/sd15.yaml", _task(2, params={"gate_step": 40})),
                                   ".params.gate_step: must be <= steps (25), got 40"),
    "unknown task key": (_edit("tasks/sd15.yaml", _task(0, step=25)),
                         "tasks[0].step: unknown key 'step' (did you mean 'steps'?)"),
    "task id with capitals": (_edit("tasks/sd15.yaml", _task(0, id="SD15-task")), "tasks[0].id: must be lowercase"),
    "batch size zero": (_edit("suites/smoke.yaml", _set(["suite", "batch_sizes"], [1, 0])),
                        "suite.batch_sizes[1]: must be >= 1, got 0"),
    "zero repeats": (_edit("suites/smoke.yaml", _set(["suite", "repeats"], 0)), "suite.repeats: must be >= 1, got 0"),
    "suite pattern matching nothing": (_edit("suites/smoke.yaml", _set(["suite", "tasks"], ["smok-*"])),
                                       "suite.tasks[0]: no task matches 'smok-*'"),
    "two prompt sources": (_edit("suites/smoke.yaml", _set(["suite", "prompts", "hub"], "nateraw/parti-prompts")),
                           "suite.prompts: give exactly one of inline, file or hub (got inline, hub)"),
    "unknown weights mode": (_edit("suites/smoke.yaml", _set(["suite", "weights"], "randm")),
                             "suite.weights: unknown weights mode 'randm' (did you mean 'random'?)"),
    "task list not a list": (_edit("tasks/smoke.yaml", _set(["tasks"], {"id": "x"})),
                             "tasks: must be a list, got a mapping"),
}


def _invoke_validate(root):
    return CliRunner().invoke(main, ["--manifests", str(root), "validate"])


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_manifest_gives_one_line_error_and_exit_2(manifest_root, case):
    (relative, change), expected = MALFORMED[case]
    path = manifest_root / relative
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    result = _invoke_validate(manifest_root)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.output


def test_yaml_syntax_error_names_the_position(manifest_root):
    path = manifest_root / "tasks" / "sd15.yaml"
    path.write_text("tasks:\n  - id: x\n    model: [sd15\n")
    result = _invoke_validate(manifest_root)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}: line ") and "invalid YAML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_folder_without_models_is_not_a_manifest_root(tmp_path):
    result = _invoke_validate(tmp_path)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path}: not a manifest root: models.yaml is missing"


def test_the_readmes_catalogue_summary_is_what_tasks_summary_prints():
    result = CliRunner().invoke(main, ["tasks", "--suite", "standard", "--summary"])
    assert result.exit_code == 0, result.output
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    copy = readme.split("<!-- catalogue summary -->\n", 1)[1].split("\n<!-- end of catalogue summary -->", 1)[0]
    assert copy == result.stdout.rstrip("\n")
    # the totals row is the suite's size by level; every not-applicable line names a method the family lacks
    catalog = load_catalog()
    totals = next(line for line in copy.splitlines() if line.startswith("| all |")).split(" | ")[3:]
    levels = Counter(catalog.tasks[task_id].level for task_id in catalog.suite("standard").tasks)
    assert [int(value.strip(" |")) for value in totals] == [*(levels[level] for level in sorted(levels)),
                                                              sum(levels.values())]
    assert "- DeepCache on PixArt-α: it needs a unet denoiser; PixArt-α's is a transformer" in copy


def test_a_per_family_suite_extends_the_standard_one(catalog):
    standard = catalog.suite("standard")
    for family in ("sd15", "sd21", "sdxl", "pixart"):
        suite = catalog.suite(family)
        assert suite.tasks == tuple(task_id for task_id in standard.tasks if task_id.startswith(f"{family}-"))
        # everything it does not give is the standard suite's
        assert (suite.prompts, suite.seeds, suite.batch_sizes, suite.repeats, suite.weights, suite.clip_model) == (
            standard.prompts, standard.seeds, standard.batch_sizes, standard.repeats, standard.weights,
            standard.clip_model)
    assert sum(len(catalog.suite(family).tasks) for family in ("sd15", "sd21", "sdxl", "pixart")) == len(
        standard.tasks)
