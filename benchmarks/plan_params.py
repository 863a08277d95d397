"""Dump every planned job's rule, wildcards, params and outputs, for comparing two checkouts.

A refactoring that must not rerun anyone's results keeps the params Snakemake records for each
job unchanged. ``python benchmarks/plan_params.py [CONFIG ...] > plan.json`` plans ``all`` for
each config (none: the default) with every job forced (so existing results do not hide a job) and
prints one sorted JSON list per config; diff the output of two checkouts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def planned_jobs(configfile: str | None) -> list[dict]:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        ResourceSettings,
    )

    configfiles = [Path(configfile).absolute()] if configfile else []
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=configfiles),
            snakefile=Path("Snakefile"),
        )
        dag_api = workflow_api.dag(DAGSettings(targets={"all"}, forceall=True))
        workflow = dag_api.workflow_api._workflow
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
        workflow._build_dag()
        jobs = [
            {
                "rule": job.rule.name,
                "wildcards": dict(job.wildcards_dict),
                "params": {k: repr(v) for k, v in job.params.items()},
                "output": sorted(map(str, job.output)),
            }
            for job in workflow.dag.jobs
        ]
    return sorted(jobs, key=lambda j: json.dumps(j, sort_keys=True))


if __name__ == "__main__":
    configs = sys.argv[1:] or [None]
    out = {str(c or "default"): planned_jobs(c) for c in configs}
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()
