"""Evaluating: what a model kept (general abilities, lm-eval) and what it learned (the task)."""
