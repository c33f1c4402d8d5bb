"""Curation algorithms (no Hydra here): embedding, kNN indexes, dedup, decontamination,
retrieval, k-means and balanced sampling, scoring, report rendering.

The curate stage (:mod:`pipeline.stages.curate`) wires them to configs and files.
"""
