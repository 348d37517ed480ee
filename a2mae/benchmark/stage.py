"""What a benchmark reads: its section and the stages whose collaborators it borrows.

The CLI and the flows build :class:`BenchmarkStage` once from the resolved parameters; nothing in
:mod:`a2mae.benchmark` sees the whole parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from a2mae.config import BenchmarkConfig, RegistryConfig
    from a2mae.finetune.stage import FinetuneStage
    from a2mae.pretrain.run import PretrainStage


@dataclass(frozen=True)
class BenchmarkStage:
    """The sections and collaborators of a benchmark.

    Attributes:
        cfg: The ``benchmark`` section.
        finetune: The fine-tuning stage: loads the encoders (``registry`` section, scratch encoder) and
            seeds the ``scratch`` arm (``finetune.seed``).
        pretrain: The pre-training stage the plain-MAE arm derives its own from (``model``,
            ``pretrain``, ``data`` sections; every resolved parameter flattened, the MLflow lineage).
    """

    cfg: BenchmarkConfig
    finetune: FinetuneStage
    pretrain: PretrainStage

    @property
    def registry(self) -> RegistryConfig:
        """The ``registry`` section (encoder model name, tracking URI)."""
        return self.finetune.registry

    @property
    def flat(self) -> dict[str, Any]:
        """Every resolved parameter, flattened (:func:`a2mae.config.params_to_flat`)."""
        return self.pretrain.flat
