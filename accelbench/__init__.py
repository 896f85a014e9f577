"""accelbench: benchmark datasets for diffusion-pipeline acceleration methods.

Import root for the whole project: ``accelbench.builder`` (the ``builder/`` folder), ``accelbench.scorer``
(``scorer/``) and ``accelbench.manifests`` (``manifests/``, packaged YAML). Nothing here imports torch.
"""

__version__ = "0.1.0"
