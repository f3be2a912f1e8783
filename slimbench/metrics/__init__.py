"""Metrics: task quality (task.py) and cost (cost.py). Each number is computed here and read elsewhere."""
