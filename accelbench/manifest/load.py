"""Loading a manifest root: ``models.yaml``, ``methods.yaml``, ``schedulers.yaml``, ``tasks/*.yaml`` and
``suites/*.yaml``, parsed and cross-checked into one :class:`Catalog`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from accelbench.manifest.checks import read_yaml
from accelbench.manifest.model import Catalog, ManifestError, Suite, Task
from accelbench.manifest.sections import parse_methods, parse_models, parse_schedulers
from accelbench.manifest.suites import parse_suite, resolve_extends
from accelbench.manifest.tasks import parse_tasks


def default_root() -> Path:
    """The packaged manifests (``manifests/`` in the source tree, ``accelbench/manifests`` when installed)."""
    return Path(str(resources.files("accelbench.manifests")))


def load_catalog(root: Path | str | None = None, extra_files=()) -> Catalog:
    """Load and validate a manifest root, plus optional extra task/suite files validated against it."""
    root = Path(root) if root is not None else default_root()
    for required in ("models.yaml", "methods.yaml", "schedulers.yaml"):
        if not (root / required).is_file():
            raise ManifestError(root, "", f"not a manifest root: {required} is missing")
    schedulers = parse_schedulers(read_yaml(root / "schedulers.yaml"), root / "schedulers.yaml")
    methods = parse_methods(read_yaml(root / "methods.yaml"), root / "methods.yaml", schedulers)
    models = parse_models(read_yaml(root / "models.yaml"), root / "models.yaml", methods)
    task_files = sorted((root / "tasks").glob("*.yaml")) if (root / "tasks").is_dir() else []
    suite_files = sorted((root / "suites").glob("*.yaml")) if (root / "suites").is_dir() else []
    for path in map(Path, extra_files):
        data = read_yaml(path)
        kind = "suite" if isinstance(data, dict) and "suite" in data else "tasks"
        (suite_files if kind == "suite" else task_files).append(path)

    tasks: dict[str, Task] = {}
    for path in task_files:
        for task in parse_tasks(read_yaml(path), path, models, schedulers, methods):
            if task.id in tasks:
                raise ManifestError(path, f"tasks ({task.id})",
                                    f"duplicate task id {task.id!r}, first defined in {tasks[task.id].source}")
            tasks[task.id] = task
    raw: dict[str, tuple[Path, object]] = {}
    for path in suite_files:
        if path.stem in raw:
            raise ManifestError(path, "suite", f"duplicate suite {path.stem!r}, first defined in {raw[path.stem][0]}")
        raw[path.stem] = (path, read_yaml(path))
    suites: dict[str, Suite] = {suite_id: parse_suite(data, raw[suite_id][0], tasks)
                                for suite_id, data in resolve_extends(raw).items()}
    return Catalog(root=root, models=models, methods=methods, schedulers=schedulers, tasks=tasks, suites=suites)
