"""Domain self-supervised pipeline: ingest, curate, pretrain, evaluate."""

__version__ = "0.1.0"
