"""Thin recipes over the library: pretraining and the fine-tuning tasks."""
