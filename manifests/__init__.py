"""accelbench.manifests: the packaged YAML manifests (models, methods, schedulers, tasks, suites, prompts)."""
