"""Job-state queries for the tests (the same helpers ``pipeline.cluster.submit --wait`` uses)."""

from pipeline.cluster.slurm import job_info, job_records, states, wait_final

__all__ = ["job_info", "job_records", "states", "wait_final"]
