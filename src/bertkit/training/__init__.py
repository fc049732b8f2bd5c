"""Training, shared by pretraining and fine-tuning.

- ``args``: ``TrainArgs`` and ``OptimizerArgs``, the loop's arguments
- ``loop``: ``Trainer``, accumulation to a global batch, mixed precision, clipping, skipped steps
- ``objective``: the ``Objective`` protocol and BERT's pretraining loss
- ``optim`` / ``schedule``: AdamW, Google's AdamWeightDecay, LAMB; warmup + linear decay
- ``checkpoint``: atomic checkpoints, exact resume
- ``batches``: ``ArrayBatches``, in-memory examples as the loop's shuffled, per-rank, resumable stream
- ``distributed``: torchrun, DDP, FSDP, activation checkpointing
- ``precision``, ``memory``, ``monitor``, ``plot``: autocast and loss scaling, the out-of-memory
  probe, progress bar / metrics.jsonl / TensorBoard, training curves

Import from the modules (``from bertkit.training.loop import Trainer``): this package imports
nothing itself, so that the command line stays quick to start.
"""
