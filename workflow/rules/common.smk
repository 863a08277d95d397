# Shared by every rule: config validation, wildcard constraints and input functions.
# No science here; that lives in src/loki_pipeline.
#
# Console: Snakemake sends a job's stderr (progress bars, loss) to its log file, so each long
# job (prepare_model, kva, train, eval_general, eval_task) has a message naming that log to
# `tail -f`, printed when the job starts; at the end of a run onsuccess prints the results.

import errno
import pathlib
import re

from loki_pipeline import runs
from loki_pipeline.config import apply_extends, check_prompt_files, validate_config
from loki_pipeline.data.kva_sets import local_dataset_file
from loki_pipeline.data.records import is_hub_source
from loki_pipeline.errors import LokiInputError
from loki_pipeline.models.sources import source_fingerprint
from loki_pipeline.plan.jobs import job_mem_mb
from loki_pipeline.results_dir import logs_dir, results_dir
from loki_pipeline.runs import (
    BASE,
    external_runs,
    parse_run,
    table_reference,
    table_runs,
    table_tasks,
    trained_run,
)
from loki_pipeline.select.naming import (
    Q_PATTERN,
    STRATEGIES,
    format_q,
    selection_filename,
    selection_stem,
)
from loki_pipeline.tasks.registry import eval_config, train_data, task_names
from loki_pipeline.train.methods import parse_method
from loki_pipeline.train.settings import TrainSettings

# A user config may start with `extends: config/config.yaml` (relative to its own folder, else
# the working directory) and give only what it changes: it is merged over the config it names
# (schema key `extends`), then validated. Without it, a --configfile replaces the default whole.
apply_extends(config, workflow.config_settings.configfiles)
# The package's schema (src/loki_pipeline/schemas/config.schema.yaml), the one `loki train
# --config` checks too: an unknown key, a wrong type or a name that is not a plain folder name
# fails here, naming its key, before any job is planned; then every default is filled in.
# (A workflow importing this one as a module with skip_validation: true checks its own.)
if not workflow.modifier.skip_validation:
    validate_config(config)

# Each config writes a folder of its own, so two configs never write the same file: results/
# for the embedded default, results/<name>/ for a --configfile <name>.yaml, or its results_dir
# (loki_pipeline.results_dir). Every rule names its outputs and logs through these two.
RESULTS = results_dir(
    config,
    workflow.config_settings.configfiles,
    f"{workflow.basedir}/config/config.yaml",
)
LOGS = logs_dir(RESULTS)


def results_path(path):
    """`path` inside this config's results folder."""
    return f"{RESULTS}/{path}"


def log_path(path):
    """`path` inside this config's log folder."""
    return f"{LOGS}/{path}"


MODELS = list(config["models"])
# The fine-tuning tasks: the paper's two and any of the user's the config declares (the task
# registry, loki_pipeline.tasks.registry); run names are parsed against them (runs.parse_run).
TASKS = task_names(config)


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)) if MODELS else "[^/]+",
    shard=r"\d+",
    run=r"[^/]+",
    task="|".join(map(re.escape, TASKS)),
    strategy="|".join(STRATEGIES),
    q=Q_PATTERN,
    method=r"[a-z0-9][a-z0-9_.]*",


def model_dir(wildcards):
    return f"resources/models/{wildcards.model}"


# Memory: a KVA, training or evaluation job asks for the host RAM (mem_mb, MiB) that the memory
# plan estimates for it (loki_pipeline.plan; `loki plan` prints it for every job): on CPU the
# job's whole peak, on a GPU what it holds on the host (the weights read before they move to the
# GPU, checkpoint copies). Each retry (the SLURM profile's) asks for attempt x that.


def plan_mem_mb(rule):
    """The `mem_mb` resource of `rule`'s jobs, from the memory plan. While the job's model is
    neither prepared nor one the plan ships, the missing input is reported as Snakemake's own
    input functions do, so the value is "to be determined" and asked again when the job is
    scheduled, its inputs present."""

    def mem_mb(wildcards, input, attempt):
        value = job_mem_mb(config, rule, wildcards, attempt)
        if value is None:
            raise FileNotFoundError(errno.ENOENT, "model not prepared yet", input.model)
        return value

    return mem_mb


# A target naming a model the config does not define (a typo: results/kva/smollm2-13m/kva.h5)
# matches no rule (the model wildcard allows only defined models); rule undefined_model
# (models.smk) matches it instead and stops the plan with this message.
STAGE_FOLDERS = ["kva", "select", "figures", "train", "suppress", "eval", "tables"]
NOT_A_MODEL = "".join(f"(?!{re.escape(m)}(?:/|$))" for m in MODELS) + r"[^/]+"


def refuse_undefined_model(wildcards):
    """The undefined_model rule's input function: the error naming the defined models."""
    import difflib

    close = difflib.get_close_matches(wildcards.name, MODELS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise LokiInputError(
        f"{wildcards.name!r} is not a model of this config{hint}: the target names a model "
        f"under {wildcards.folder}/, and the models defined (config key 'models') are: "
        f"{', '.join(MODELS) or 'none'}"
    )


def kva_shards():
    return range(config["kva"]["shards"])


def kva_dataset(compare=False):
    """kva.dataset (or compare_dataset), its format left out when 'mmlu' (the default), so
    shards made before the option are not redone."""
    dataset = config["kva"]["compare_dataset" if compare else "dataset"]
    return {k: v for k, v in dataset.items() if (k, v) != ("format", "mmlu")}


def kva_settings(model, compare=False):
    """The kva block a shard job of `model` gets (Snakemake reruns a job whose params change):
    without compare_dataset, so setting it reruns no shard of the main set; prompt_format
    resolved for the model and left out when 'chat' (the default), so a chat model's shards
    made before the option are not redone; for the compare set, it as the dataset."""
    kva = {
        k: v
        for k, v in config["kva"].items()
        if k not in ("compare_dataset", "prompt_format")
    }
    fmt = config["kva"]["prompt_format"]
    fmt = fmt.get(model, "chat") if isinstance(fmt, dict) else fmt
    if fmt != "chat":
        kva["prompt_format"] = fmt
    return {**kva, "dataset": kva_dataset(compare)}


def kva_dataset_file(compare=False):
    """The prompt set's local file, else None (data.kva_sets.local_dataset_file)."""
    return local_dataset_file(kva_dataset(compare))


def kva_inputs(wildcards, compare=False):
    """The shard's model and its prompt set's local file, so editing that file redoes the KVA.
    An mmlu file is left out: results made before this input existed would all be redone; the
    shard's own fingerprint of the questions still redoes a shard whose questions changed when
    it runs."""
    inputs = {"model": f"resources/models/{wildcards.model}"}
    source = kva_dataset_file(compare)
    if source is not None:
        inputs["dataset"] = source
    return inputs


# A missing prompt file stops the plan here, naming its key (loki plan checks the same).
check_prompt_files(config)


def all_targets():
    """Every file the config asks for; `rule all` depends on these."""
    targets = []
    targets += expand(results_path("kva/{model}/kva.h5"), model=MODELS)
    targets += select_targets()  # selections, figures, stability (below)
    targets += train_targets()  # training runs of `experiments` (train.smk)
    targets += report_targets()  # tables and trade-off figures (report.smk)
    if config["kva"]["compare_dataset"] is not None:  # the second KVA set's overlap
        targets += expand(
            results_path("select/{model}/dataset_overlap.csv"), model=MODELS
        )
    return targets


# A "run" names one model to evaluate (loki_pipeline.runs): "base" (the untuned model),
# "{task}-{method}" (a training run), "suppress-{strategy}_q{q}" (a suppression ablation, the
# LoKI paper's Table 5), or any other name: an external run, a released model of
# `external_runs` (prepared into resources/external/{model}/{run}) or, named after an entry of
# `models`, that model's prepared checkpoint.
def run_model_dir(model, run):
    """Directory of the plain Hugging Face checkpoint a run's evaluation loads."""
    parsed = parse_run(run, TASKS)
    if parsed.kind == "base":
        return f"resources/models/{model}"
    if parsed.kind == "suppress":
        return results_path(
            f"suppress/{model}/{selection_stem(parsed.strategy, parsed.q)}"
        )
    if parsed.kind == "trained":
        return results_path(f"train/{model}/{parsed.task}/{parsed.method.name}/merged")
    if run in external_runs(config, model):
        return f"resources/external/{model}/{run}"
    if run in config["models"]:
        return f"resources/models/{run}"
    raise LokiInputError(
        f"run {run!r} of model {model!r}: not a base, training or suppression run, and not "
        f"listed under external_runs.{model} or models"
    )


def training_runs(model):
    """(task, method) pairs the config asks to train for a model."""
    tasks = config["experiments"].get(model, {})
    return [(task, method) for task, methods in tasks.items() for method in methods]


def task_methods(model, task):
    """Methods the config trains on one task for a model, in the config's order."""
    return [m for t, m in training_runs(model) if t == task]


# Selecting (select.smk): selection files, figure targets, honest {strategy} and {q} wildcards.
SELECT = config["select"]  # the Selecting stage (select.smk)
# Published selection files (select.imports) stand in for the computed selections they name:
# "{model}/{strategy}_q{q}", matched by rule import_selection only.
IMPORTED = [f"{m}/{stem}" for m, stems in SELECT["imports"].items() for stem in stems]


def imported_selection(imported):
    """(model, path of the published file) of an imported "{model}/{stem}"."""
    model, stem = imported.split("/", 1)
    return model, SELECT["imports"][model][stem]


def selection_file(model, strategy, q):
    """The selection JSON for (model, strategy, q); other stages ask for selections through it."""
    return results_path(f"select/{model}/{selection_filename(strategy, q)}")


def heatmap_q(model):
    """The q of a model's figures: one number for all models, or a per-model mapping."""
    value = SELECT["heatmap_q"]
    return value.get(model, 10) if isinstance(value, dict) else value


def figure_targets():
    """Heatmaps, global per-layer counts and stability for every model (the `figures` target)."""
    targets = []
    for model in MODELS:
        q = format_q(heatmap_q(model))
        for stem in (f"kva_heatmap_q{q}", f"global_layer_counts_q{q}", "stability"):
            targets += expand(results_path("figures/{model}/{stem}.{ext}"), model=model, stem=stem,
                              ext=["png", "pdf"])  # fmt: skip
        targets.append(results_path(f"select/{model}/stability.csv"))
    return targets


def select_targets():
    """Every selection the config asks for (strategies x q) plus the figures."""
    # an analyse_only model's figures ask for the selections they need, no more
    targets = [
        selection_file(model, strategy, q)
        for model in MODELS
        if not config["models"][model]["analyse_only"]
        for strategy in SELECT["strategies"]
        for q in SELECT["q"]
    ]
    return targets + figure_targets()


# Implanting (train.smk): what each training run reads, and the runs the config asks for.
def train_inputs(wildcards):
    """Base model, the task's local data file (if any) and, for LoKI methods, the selection."""
    inputs = {"model": f"resources/models/{wildcards.model}"}
    # a task the config does not declare trains on its shipped set
    declared = wildcards.task in config["tasks"]
    source = config["tasks"][wildcards.task]["train"]["source"] if declared else None
    if source and not is_hub_source(str(source)):
        inputs["data"] = source
    method = parse_method(wildcards.method)
    if method.needs_selection:
        inputs["selection"] = selection_file(wildcards.model, method.strategy, method.q)
    if method.kind == "corda":  # CorDA's NQ-Open rows (KPM), when a local file
        settings = TrainSettings.from_config(config, wildcards.task, wildcards.method)
        calibration = settings.corda_calibration
        if calibration is not None and not is_hub_source(calibration):
            inputs["corda_calibration"] = calibration
    return inputs


def task_train_data(task):
    """What a training run of `task` reads of its config block: tasks.<task>.train ({} for a
    paper task the config does not declare: its shipped set), and for a task of the user's the
    held-out split it leaves out (loki_pipeline.tasks.registry.train_data)."""
    return train_data(task, config["tasks"][task] if task in config["tasks"] else None)


def train_processes(wildcards):
    """training.processes of one run (per task or method, like any training setting): the
    train rule runs it under torchrun as that many processes, one GPU each on CUDA."""
    return TrainSettings.from_config(config, wildcards.task, wildcards.method).processes


def train_targets():
    """Every training run's directory files the config asks for."""
    return [
        results_path(f"train/{model}/{task}/{method}/trainable_params.json")
        for model in MODELS
        for task, method in training_runs(model)
    ]


# Evaluating (evaluate_task.smk): the tasks a run's task.json reports.
def run_tasks(model, run):
    """Tasks whose performance task.json of (model, run) reports (runs.run_tasks)."""
    return runs.run_tasks(config, model, run, TASKS)


def task_eval_configs(model, run):
    """Task -> what the run's task evaluation reads of tasks.<task>: a paper task's eval object,
    a task of the user's whole block (loki_pipeline.tasks.registry.eval_config)."""
    return {t: eval_config(t, config["tasks"][t]) for t in run_tasks(model, run)}


# Reporting (report.smk): the runs of each table, suppression runs, table inputs and targets.
def task_runs(model, task):
    """Runs of one task's tables: the untuned base first, then the task's training runs, then
    its external runs (loki_pipeline.runs.table_runs)."""
    return table_runs(config, model, task)


def suppress_runs(model):
    """Suppression ablation run names from config `suppress` (runs.suppress_runs)."""
    return runs.suppress_runs(config, model)


def eval_inputs(wildcards):
    """The general and task results of every run of the (model, task) table, in row order."""
    model, runs = wildcards.model, task_runs(wildcards.model, wildcards.task)
    return {
        "general": [results_path(f"eval/{model}/{r}/general.json") for r in runs],
        "task": [results_path(f"eval/{model}/{r}/task.json") for r in runs],
    }


def table_inputs(wildcards):
    """eval_inputs and the trainable-parameter counts of the task's methods."""
    model, task = wildcards.model, wildcards.task
    return eval_inputs(wildcards) | {
        "params": [
            results_path(f"train/{model}/{task}/{m}/trainable_params.json")
            for m in task_methods(model, task)
        ],
    }


def report_targets():
    """Tables and trade-off figures of every trained task, and the suppression table."""
    targets = []
    for model in MODELS:
        for task in table_tasks(config, model):
            for stem in ("forgetting", "task", "comparison"):
                targets += expand(
                    results_path("tables/{model}/{task}/{stem}.{ext}"),
                    model=model, task=task, stem=stem, ext=["csv", "md", "tex", "html"],
                )  # fmt: skip
            targets.append(results_path(f"figures/{model}/{task}/tradeoff.png"))
        if suppress_runs(model):
            targets += expand(
                results_path("tables/{model}/suppress/forgetting.{ext}"),
                model=model, ext=["csv", "md", "tex", "html"],
            )  # fmt: skip
    return targets


def eval_general_data(wildcards):
    """The local items the run reads (none for source 'hub'), so editing them re-runs it."""
    general = config["evaluate"]["general"]
    if general["source"] != "local":
        return []
    root = general["data_dir"]
    tasks = general["tasks"]
    return sorted(
        str(p) for task in tasks for p in pathlib.Path(root, task).glob("*.jsonl")
    )


def print_summary():
    """The end-of-run summary (onsuccess in the Snakefile): each table's path and, per run, Avg
    and the primary task score with their intervals, read from the tables this config's targets
    name (those that exist: a run of one target reports the tables already there)."""
    from loki_pipeline.report.summary import summarize

    configfiles = " ".join(map(str, workflow.config_settings.configfiles))
    command = f"snakemake --report {RESULTS}/report.html" + (
        f" --configfile {configfiles}" if configfiles else ""
    )
    text = summarize(report_targets(), command)
    if text:
        print(f"\n{text}", end="", flush=True)


def print_interrupted(snakemake_log):
    """After Ctrl-C (the Snakefile's onerror): one last line saying the same command resumes,
    and exit status 130 (SystemExit passes through Snakemake's clean-up, which a rerun needs:
    no lock is left)."""
    from loki_pipeline.interrupt import EXIT_STATUS, MESSAGE, snakemake_was_interrupted

    if snakemake_was_interrupted(snakemake_log):
        print(MESSAGE, flush=True)
        raise SystemExit(EXIT_STATUS)
