"""Evaluation: datasets of cases, run in evaluation mode (no side effect ever executes) and scored."""
