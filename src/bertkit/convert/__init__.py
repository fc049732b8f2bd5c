"""Checkpoint formats: Google TF checkpoints, HF directories, bertkit's own format."""
