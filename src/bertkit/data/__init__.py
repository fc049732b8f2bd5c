"""Pretraining data: corpus text to sentences to training instances, and TensorFlow's file formats."""
