"""Starting a pre-training run from the weights of an earlier encoder (e.g. the ``@champion``)."""

from __future__ import annotations

from typing import Any

from a2mae.checkpoint import load_checkpoint
from a2mae.errors import A2maeError
from a2mae.pretrain.loop import LoopSections, build_model


class InitFromCheckpoint:
    """Model factory of a run that starts from a checkpoint's weights (picklable for Ray workers).

    The model is built from the run's own parameters, so an architecture that differs from the
    checkpoint's fails loudly instead of training something else.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, sections: LoopSections) -> Any:
        """Build the run's model (its sections) and load the checkpoint's weights into it."""
        model = build_model(sections)
        source, _ = load_checkpoint(self.path)
        try:
            model.load_state_dict(source.state_dict())
        except RuntimeError as err:
            raise A2maeError(
                f"champion encoder {self.path}: its architecture differs from model.name "
                f"{sections.model.name} ({str(err).splitlines()[0]}); pre-train from scratch instead"
            ) from None
        return model.train()
