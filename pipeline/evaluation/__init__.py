"""Evaluation: how much a backbone is worth on labeled domain data.

Typed, Hydra-free building blocks used by :mod:`pipeline.stages.eval`:

* :mod:`~pipeline.evaluation.dataset`: the labeled evaluation set from ingest shards;
* :mod:`~pipeline.evaluation.features`: frozen-feature extraction (CNN pooling, ViT CLS + mean patch) with a cache;
* :mod:`~pipeline.evaluation.folds`: grouped / stratified cross-validation folds, or the fixed split;
* :mod:`~pipeline.evaluation.frozen`: kNN and linear probe over folds and label fractions;
* :mod:`~pipeline.evaluation.knn`: DINO's temperature-weighted kNN classifier (centred, prior-corrected);
* :mod:`~pipeline.evaluation.linear_probe`: balanced logistic regression with a validated C grid (L-BFGS);
* :mod:`~pipeline.evaluation.intervals`: corrected confidence intervals of cross-validated scores;
* :mod:`~pipeline.evaluation.finetune`: few-label fine-tuning of the whole backbone (Lightning);
* :mod:`~pipeline.evaluation.fractions`: stratified, seeded, nested label subsets;
* :mod:`~pipeline.evaluation.metrics`: accuracy, balanced accuracy, macro-F1, AUROC;
* :mod:`~pipeline.evaluation.label_efficiency`: "what share of the labels matches the baseline";
* :mod:`~pipeline.evaluation.headline`: protocol checks (under-trained protocols) and the headline;
* :mod:`~pipeline.evaluation.report`, :mod:`~pipeline.evaluation.summary_figure`,
  :mod:`~pipeline.evaluation.report_page`: CSV, plots, the summary figure and ``report.md``.
"""
