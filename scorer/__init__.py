"""accelbench.scorer: CLIP scores, fidelity, aggregates, reports and publishing; runs on CPU."""
