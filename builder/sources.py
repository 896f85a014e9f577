"""Where each family's model comes from: what a program's ``load()`` gets as ``model_id`` (a Hub id, a local
folder, or a synthetic random-weight folder built and saved once), and the resolution its images are asked at."""

from __future__ import annotations

from accelbench.builder import synthetic
from accelbench.builder.plan import PlanError
from accelbench.manifest import Catalog


class ModelSources:
    """What ``load()`` gets as ``model_id`` per family: the Hub id, a local folder, or a synthetic folder."""

    def __init__(self, catalog: Catalog, weights: str, device: str, overrides: dict[str, str]):
        unknown = sorted(set(overrides) - set(catalog.models))
        if unknown:
            raise PlanError(f"--model {unknown[0]}=...: unknown model family; known: {', '.join(catalog.models)}")
        if overrides and weights != "pretrained":
            raise PlanError(f"--model points at pretrained weights; it does not apply to --weights {weights}")
        self.catalog, self.weights, self.device, self.overrides = catalog, weights, device, overrides
        self._paths: dict[str, str] = {}

    def path(self, family: str) -> str:
        if family not in self._paths:
            self._paths[family] = self._resolve(family)
        return self._paths[family]

    def _resolve(self, family: str) -> str:
        if self.weights == "pretrained":
            return self.overrides.get(family, self.catalog.models[family].hub_id)
        if self.weights == "tiny":
            return str(synthetic.materialize(self.catalog.models[family], "tiny"))
        import torch

        # Full-size random weights are drawn on the GPU (fast) in the model's dtype.
        on_gpu = self.device.startswith("cuda")
        dtype = getattr(torch, self.catalog.models[family].dtype) if on_gpu else torch.float32
        return str(synthetic.materialize(self.catalog.models[family], "full", device=self.device, dtype=dtype))

    def resolution(self, family: str) -> int:
        size = "tiny" if self.weights == "tiny" else "full"
        return synthetic.resolution(self.catalog.models[family], size)
