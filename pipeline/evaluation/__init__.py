"""Evaluation: how much a backbone is worth on labeled domain data.

Typed, Hydra-free building blocks used by :mod:`pipeline.stages.eval`:

* :mod:`~pipeline.evaluation.dataset`: the labeled evaluation set from ingest shards;
* :mod:`~pipeline.evaluation.features`: frozen-feature extraction with an on-disk cache;
* :mod:`~pipeline.evaluation.knn`: DINO's temperature-weighted kNN classifier;
* :mod:`~pipeline.evaluation.linear_probe`: logistic regression with a validated C grid;
* :mod:`~pipeline.evaluation.finetune`: few-label fine-tuning of the whole backbone (Lightning);
* :mod:`~pipeline.evaluation.fractions`: stratified, seeded, nested label subsets;
* :mod:`~pipeline.evaluation.metrics`: accuracy, balanced accuracy, macro-F1, AUROC;
* :mod:`~pipeline.evaluation.label_efficiency`: "what share of the labels matches the baseline";
* :mod:`~pipeline.evaluation.report`: plots, CSV and markdown.
"""
