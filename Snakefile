# LoKI: Low-damage Knowledge Implanting of LLMs, as a Snakemake workflow.
# Analysing (KVA) -> Selecting -> Implanting -> measuring forgetting. See README.md.

from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless --configfile names another config: a paper or user config then
# replaces it whole rather than being merged into it (no default model sneaks into a paper run).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/kva.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate_general.smk"
include: "workflow/rules/evaluate_task.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),


onsuccess:
    print_summary()  # tables and, per run, Avg and the task score (report.smk)


onerror:
    print_interrupted(log)  # after Ctrl-C: how to resume (common.smk)
