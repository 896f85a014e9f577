"""Publishing a scored dataset to the Hugging Face Hub.

* :mod:`accelbench.hub.stage`: checks that a dataset can be published, stages the Hub-ready folder (Parquet
  configs, programs, runs, report) and uploads it (``accelbench publish``);
* :mod:`accelbench.hub.card`: the dataset card, ``README.md``: its YAML header declares the configs.

The tables come from the scorer (:mod:`accelbench.scorer.store`, :func:`accelbench.scorer.report.read_summary`);
this package only stages them.
"""
