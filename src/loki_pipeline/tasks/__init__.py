"""Tasks: what the pipeline knows about a fine-tuning task (``registry``: its data loader, shipped
data and evaluation) and the driver that evaluates a model on one (``driver``). The registry sits
above the stages it names (data, training, evaluation), as lm-eval's task registry sits below
its evaluator; ``loki eval-task`` (``cli.eval_task``) is its command.
"""
