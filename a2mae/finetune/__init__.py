"""Stage 4, fine-tuning of A²-MAE: datasets users bring, training, metrics and reports.

Tasks: scene classification (single- and multi-label), semantic segmentation (FPN/UPerNet-style decoder
over the encoder's multi-level features) and change detection (siamese encoder, feature difference,
decoder). Protocols: linear probe (frozen encoder) and full fine-tuning with layer-wise learning-rate
decay. See ``docs/finetune.md``.
"""
