"""Probing protocols on cached embeddings: kNN and the linear probe (fine-tuning: :mod:`.finetune`)."""
