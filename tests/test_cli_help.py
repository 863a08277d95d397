"""``loki --help`` and each command's help: every flag has a help text that names its default,
an unknown flag is answered with its command's usage and a did-you-mean (issue 27, item 3)."""

from __future__ import annotations

import argparse

import pytest

from loki_pipeline.cli import COMMANDS, build_parser, main
from loki_pipeline.cli.help import HelpFormatter


def command_parser(name: str) -> argparse.ArgumentParser:
    commands: dict[str, argparse.ArgumentParser] = {}
    build_parser([name], commands)
    return commands[name]


def flags_without_a_default(parser: argparse.ArgumentParser) -> list[str]:
    """Flags whose help is missing, or does not name a default (or when it is required)."""
    formatter = HelpFormatter("loki")
    # a flag with old spellings (cli.options.add_renamed) is required through its group
    required = {
        id(a) for g in parser._mutually_exclusive_groups if g.required for a in g._group_actions
    }
    bad = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        text = formatter._get_help_string(action) or ""
        if not text.strip() or not (
            action.required or id(action) in required or "default" in text or "required" in text
        ):
            bad.append("/".join(action.option_strings) or action.dest)
    return bad


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_has_a_help_text_and_its_default(name):
    assert flags_without_a_default(command_parser(name)) == []


def test_the_check_sees_a_flag_without_help():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--steps", type=int, default=3, help="steps")
    parser.add_argument("--out", required=True, help="where")
    assert flags_without_a_default(parser) == ["--lr"]
    assert "(default: 3)" in parser.format_help()


def test_train_help_shows_the_schemas_defaults():
    from loki_pipeline.settings import schema_default

    text = command_parser("train").format_help()
    assert f"(default: {schema_default('training.learning_rate')})" in text
    assert f"(default: {schema_default('training.batch_size')})" in text


def test_kva_and_eval_task_say_what_they_do_now():
    kva, eval_task = COMMANDS["kva"][1], COMMANDS["eval-task"][1]
    assert "MMLU" in kva and "prompts file" in kva and "lm-eval" in kva
    assert "BFCL" in eval_task and "reranking" in eval_task and "your own" in eval_task


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["--learning-rate", "3"], "--learning-rate (did you mean --lr?)"),
        (["--max-stpes", "3"], "--max-stpes (did you mean --max-steps?)"),
    ],
)
def test_an_unknown_flag_gets_a_did_you_mean_under_its_commands_usage(argv, hint, capsys):
    base = ["train", "--model", "m", "--task", "toolace", "--method", "full", "--out", "o"]
    with pytest.raises(SystemExit) as exit_:
        main(base + argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage: loki train" in err
    assert hint in err
