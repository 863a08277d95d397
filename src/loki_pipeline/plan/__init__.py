"""The memory plan: each KVA, training and evaluation job's peak memory, before it runs.

``loki plan --configfile FILE`` prints it; the Snakemake rules take their ``mem_mb`` from it
(:func:`loki_pipeline.plan.jobs.job_mem_mb`). Light (no torch), so the Snakefile imports it.
"""
