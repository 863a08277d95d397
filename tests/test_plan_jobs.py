"""`loki plan` and the rules' mem_mb: every KVA, training and evaluation job of a config."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from loki_pipeline.cli import main
from loki_pipeline.cli.plan import load_config
from loki_pipeline.errors import LokiInputError
from loki_pipeline.plan.jobs import job_estimate, job_mem_mb, plan_jobs
from loki_pipeline.plan.rows import plan_rows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # configs name data/ and resources/ relative to the repository


def counts(config) -> Counter:
    c = Counter()
    for job in plan_jobs(config):
        c[job.rule] += job.count
    return c


def test_plan_has_the_jobs_snakemake_plans_for_the_paper():
    """The job counts test_workflow_plan asserts for `snakemake -n` of the same config."""
    c = counts(load_config("config/paper.yaml"))
    assert c == {"kva": 3 * 8, "train": 17, "eval_general": 25, "eval_task": 21}


def test_plan_has_the_jobs_snakemake_plans_for_the_default():
    c = counts(load_config("config/config.yaml"))
    assert c == {"kva": 2, "train": 2, "eval_general": 5, "eval_task": 3}


def test_paper_jobs_on_gpus_keep_weights_on_the_host_only():
    rows = {r["job"]: r for r in plan_rows(load_config("config/paper.yaml"))}
    kva = rows["results/kva/llama-3.1-8b-instruct/shards/{i}.h5"]
    assert kva["gpus"] == 1 and kva["count"] == 8
    assert kva["parts_gb"]["weights"] == pytest.approx(8.03e9 * 4 / 1e9, rel=1e-3)  # float32
    # host: the float32 weights read before they move to the GPU, plus imports and CUDA
    assert kva["mem_mb"] == pytest.approx((32.12e9 + 4e9) / 2**20, rel=1e-3)
    train = rows["results/train/llama-3.1-8b-instruct/toolace/loki_q10"]
    assert train["parts_gb"]["weights"] < 18  # bf16, plus the trained rows in float32


def test_cpu_jobs_ask_for_their_whole_peak_and_retries_for_more():
    config = load_config("config/config.yaml")
    wildcards = {"model": "smollm2-135m", "task": "toolace", "method": "lora_r16"}
    estimate = job_estimate(config, "train", wildcards)
    assert estimate.gpus == 0
    first = job_mem_mb(config, "train", wildcards)
    assert first * 2**20 > estimate.device + 0.5e9  # the peak over the imports, on the host
    assert job_mem_mb(config, "train", wildcards, attempt=2) == 2 * first


def test_unknown_unprepared_model_is_to_be_determined_in_the_workflow_and_an_error_in_the_plan(
    tmp_path,
):
    config = load_config("config/config.yaml")
    config["models"]["mine"] = {"source": "hf:someone/some-model", "analyse_only": False}
    assert job_mem_mb(config, "kva", {"model": "mine"}) is None
    # a run of the default model that evaluates the unknown one (external runs may be models)
    assert job_mem_mb(config, "eval_general", {"model": "smollm2-135m", "run": "mine"}) is None
    with pytest.raises(LokiInputError, match=r"'mine'.*resources/models/mine"):
        job_estimate(config, "kva", {"model": "mine"})


def test_local_model_reads_its_own_config(tmp_path, tiny_checkpoint):
    config = load_config("config/config.yaml")
    config["models"]["tiny"] = {"source": f"local:{tiny_checkpoint}", "analyse_only": False}
    estimate = job_estimate(config, "kva", {"model": "tiny"})
    assert 0 < estimate.parts["weights"] < 1e6


def test_plan_settings_change_the_estimates():
    config = load_config("config/paper.yaml")
    config["training"]["loss_chunk_tokens"] = 0  # the plain loss: logits of every token
    wildcards = {"model": "llama-3.1-8b-instruct", "task": "toolace", "method": "loki_q10"}
    full = job_estimate(config, "train", wildcards).parts["logits"]
    config["plan"]["supervised_fraction"] = {"toolace": 0.25}
    assert job_estimate(config, "train", wildcards).parts["logits"] < full / 3
    task = job_estimate(config, "eval_task", {"model": "llama-3.1-8b-instruct", "run": "base"})
    config["plan"]["prompt_tokens"]["toolace"] = 1024
    smaller = job_estimate(config, "eval_task", {"model": "llama-3.1-8b-instruct", "run": "base"})
    assert smaller.device < task.device


def test_loki_plan_prints_a_table_and_json(capsys):
    assert main(["plan", "--configfile", "config/paper.yaml"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| job | model | what |")
    assert "results/paper/train/qwen2.5-0.5b-instruct/reranker/full" in out  # its folder
    assert main(["plan", "--configfile", "config/config.yaml", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {r["rule"] for r in rows} == {"kva", "train", "eval_general", "eval_task"}
    assert all(r["mem_mb"] > 0 and r["device_gb"] > 0 for r in rows)


def test_loki_plan_names_an_unknown_model_and_how_to_prepare_it(tmp_path, capsys):
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["models"] = {"mine": {"source": "hf:someone/some-model"}}
    config["experiments"] = {}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["plan", "--configfile", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model 'mine' (hf:someone/some-model)" in err
    assert "snakemake --cores 1 resources/models/mine" in err


def test_plan_estimates_every_job_of_a_task_of_your_own():
    """config/example_task.yaml: the cities task's prompts are its cutoff_len (no
    plan.prompt_tokens entry of its own), its held-out losses a full-logits forward."""
    config = load_config("config/example_task.yaml")
    assert counts(config) == {"kva": 2, "train": 2, "eval_general": 3, "eval_task": 3}
    rows = {r["job"]: r for r in plan_rows(config)}
    assert "results/train/smollm2-135m/cities/loki_q10" in rows
    assert rows["results/eval/smollm2-135m/{run}/task.json"]["what"].startswith(
        "cities, batch 8 x 128 tokens"
    )
    estimate = job_estimate(config, "eval_task", {"model": "smollm2-135m", "run": "base"})
    assert estimate.device > 0


# --------------------------------------------------------------------------- issue 26
def _toolace_rows(config):
    return [r for r in plan_rows(config) if r["rule"] == "train" and "/toolace/" in r["job"]]


def test_the_papers_per_device_toolace_step_fits_80_gb_with_the_chunked_loss():
    config = load_config("config/paper.yaml")
    rows = _toolace_rows(config)
    assert rows and all("batch 4 x 8192" in r["what"] for r in rows)  # the paper's step
    assert all(r["fits"] == "yes" and r["device_gb"] <= 80 for r in rows)
    config["training"]["loss_chunk_tokens"] = 0  # the plain loss: 59 GB of logits
    plain = _toolace_rows(config)
    assert all(r["fits"] == "no" and r["parts_gb"]["logits"] > 50 for r in plain)
    assert all(r["fit"].startswith("fits with loss_chunk_tokens: 0 -> 1024") for r in plain)


def test_a_job_over_the_gpu_gets_the_smallest_change_that_fits():
    config = load_config("config/paper.yaml")
    config["plan"]["gpu_memory_gb"] = 24
    rows = {r["job"]: r for r in plan_rows(config)}
    loki = rows["results/train/llama-3.1-8b-instruct/toolace/loki_q10"]
    assert loki["fits"] == "no"
    # the weights alone are 16 GB: checkpointing is on, so a smaller chunk and batch
    assert loki["fit"].startswith("fits with ") and "batch_size: 4 -> 1" in loki["fit"]
    gb = float(loki["fit"].rsplit("(", 1)[1].split()[0])
    assert gb <= 24
    kva = rows["results/kva/llama-3.1-8b-instruct/shards/{i}.h5"]
    assert kva["fits"] == "no" and "KVA holds the whole model (32 GB" in kva["fit"]  # float32


@pytest.mark.parametrize(
    "source", ["hf:meta-llama/Llama-3.1-70B-Instruct", "hf:Qwen/Qwen2.5-72B-Instruct"]
)
def test_a_model_larger_than_one_gpu_is_said_to_need_more_than_one_node(source):
    config = load_config("config/paper.yaml")
    config["models"]["llama-3.1-8b-instruct"]["source"] = source
    rows = {r["job"]: r for r in plan_rows(config)}
    kva = rows["results/kva/llama-3.1-8b-instruct/shards/{i}.h5"]
    assert kva["fits"] == "no" and "KVA holds the whole model" in kva["fit"]
    loki = rows["results/train/llama-3.1-8b-instruct/toolace/loki_q10"]
    assert loki["fits"] == "no" and "keep the whole model on every GPU" in loki["fit"]


def test_the_shipped_table_has_the_larger_models_with_their_published_sizes():
    from loki_pipeline.plan.dims import known_dims

    sizes = {
        "meta-llama/Llama-3.1-70B-Instruct": 70.55,
        "Qwen/Qwen2.5-7B-Instruct": 7.62,
        "Qwen/Qwen2.5-72B-Instruct": 72.71,
    }  # fmt: skip  (the model cards' counts)
    for repo, billions in sizes.items():
        assert known_dims(f"hf:{repo}").num_params() / 1e9 == pytest.approx(billions, abs=0.01)
