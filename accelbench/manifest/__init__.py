"""Load and strictly validate the YAML manifests into one typed :class:`Catalog`.

A manifest root holds ``models.yaml``, ``methods.yaml``, ``schedulers.yaml``, ``tasks/*.yaml`` and
``suites/*.yaml``. Every problem is reported as one :class:`ManifestError` line naming the file, the key and
what is wrong (with a did-you-mean for unknown keys and names); nothing is silently corrected.

The package: :mod:`.model` (the typed entries), :mod:`.load` (:func:`load_catalog`), the parsers
(:mod:`.sections`, :mod:`.tasks`, :mod:`.suites`, on :mod:`.checks`) and :mod:`.text` (task text, rendered and
parsed back). Pure Python + PyYAML: ``accelbench --help`` and the scorer import it, so no torch here.
"""

from accelbench.manifest.load import default_root, load_catalog
from accelbench.manifest.model import (
                                       ALWAYS_FIXED,
                                       BASELINE_METHOD,
                                       DEFAULT_CLIP_MODEL,
                                       DEFAULT_CLIP_PRETRAINED,
                                       DENOISERS,
                                       DTYPES,
                                       FIXABLE,
                                       GPU_CLASSES,
                                       LATENCY_LEVEL,
                                       LEVELS,
                                       PIPELINE_LEVEL,
                                       SAMPLER_PARAM,
                                       SAMPLER_STEPS_PARAM,
                                       SPEEDUP_LEVEL,
                                       TAG_SWEEP,
                                       TARGET_METHOD,
                                       TIERS,
                                       WEIGHTS_MODES,
                                       Catalog,
                                       GateTolerance,
                                       ManifestError,
                                       Method,
                                       MethodBinding,
                                       Model,
                                       ParamSpec,
                                       PromptSource,
                                       QualityBudget,
                                       Scheduler,
                                       Suite,
                                       Target,
                                       Task,
                                       did_you_mean,
                                       gpu_class,
                                       setting_id,
                                       task_level,
                                       task_tags,
                                       unknown_name,
)
from accelbench.manifest.suites import expand_task_patterns
from accelbench.manifest.text import parse_task_text, render_target_text, render_task_text

__all__ = ["ALWAYS_FIXED", "BASELINE_METHOD", "DEFAULT_CLIP_MODEL", "DEFAULT_CLIP_PRETRAINED", "DENOISERS", "DTYPES",
           "FIXABLE", "GPU_CLASSES", "LATENCY_LEVEL", "LEVELS", "PIPELINE_LEVEL", "SAMPLER_PARAM",
           "SAMPLER_STEPS_PARAM", "SPEEDUP_LEVEL", "TAG_SWEEP", "TARGET_METHOD",
           "TIERS", "WEIGHTS_MODES", "Catalog", "GateTolerance", "ManifestError", "Method", "MethodBinding", "Model",
           "ParamSpec", "PromptSource", "QualityBudget", "Scheduler", "Suite", "Target", "Task", "default_root",
           "did_you_mean", "expand_task_patterns", "gpu_class", "load_catalog", "parse_task_text",
           "render_target_text", "render_task_text", "setting_id", "task_level", "task_tags", "unknown_name"]
