"""Running the pipeline on a Slurm cluster: job chains, requeue-safe training, rank helpers.

Slurm is the scheduler; this package only submits to it (through submitit) and
makes jobs safe to preempt and requeue.
"""
