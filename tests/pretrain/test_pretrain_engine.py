"""The optimiser step: accumulation, gradient sync across workers, clipping and the non-finite guard."""

from __future__ import annotations

import contextlib
import copy
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from a2mae.pretrain.engine import Engine, NonFiniteLossError, autocast_context, step_seed
from a2mae.types import ImageMeta, ImageSample, ImageSetSample, SetBatch, collate_sets

SENSORS = ("S2", "L8", "GF2")


@dataclass
class _Out:
    loss: torch.Tensor
    loss_per_sensor: dict[str, torch.Tensor]


class ToyModel(nn.Module):
    """One linear head per sensor; loss = mean over sets of the mean squared error of its images."""

    def __init__(self, nan_steps: tuple[int, ...] = ()) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.heads = nn.ModuleDict({s: nn.Linear(3, 1) for s in SENSORS})
        self.shared = nn.Linear(3, 3)
        self.nan_steps = set(nan_steps)
        self.calls = 0

    def forward(self, batch: SetBatch, generator: torch.Generator | None = None) -> _Out:
        self.calls += 1
        per_image, sensors = [], []
        for im in batch.images:
            x = self.shared(im.pixels.mean(dim=(1, 2)))
            pred = self.heads[im.meta.sensor](x).squeeze()
            per_image.append((pred - im.pixels.sum()) ** 2)
            sensors.append(im.meta.sensor)
        per_image_t = torch.stack(per_image)
        per_set = torch.zeros(batch.num_sets).index_add(0, batch.set_index, per_image_t)
        per_set = per_set / torch.bincount(batch.set_index, minlength=batch.num_sets)
        loss = per_set.mean()
        if self.calls in self.nan_steps:
            loss = loss * float("nan")
        by_sensor = {
            s: per_image_t.detach()[[i for i, t in enumerate(sensors) if t == s]].mean() for s in set(sensors)
        }
        return _Out(loss, by_sensor)


def _set(i: int, sensors: tuple[str, ...]) -> ImageSetSample:
    g = torch.Generator().manual_seed(i)
    images = [
        ImageSample(torch.rand(3, 4, 4, generator=g), ImageMeta(sensor=s, bands=("a", "b", "c")))
        for s in sensors
    ]
    return ImageSetSample(set_id=f"set{i}", images=images)


# Four sets: GF2 only in the last one, L8 in none.
SETS = [_set(0, ("S2",)), _set(1, ("S2", "S2")), _set(2, ("S2",)), _set(3, ("S2", "GF2"))]


def _engine(model: nn.Module, **kw) -> Engine:
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    return Engine(model=model, optimizer=opt, lr_at=lambda s: 0.1, sensors=SENSORS, **kw)


def _grads(model: nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def test_accumulation_equals_one_big_batch():
    a, b = ToyModel(), ToyModel()
    res_a = _engine(a).step([collate_sets(SETS)], step=1)
    res_b = _engine(b).step([collate_sets(SETS[:2]), collate_sets(SETS[2:])], step=1)
    ga, gb = _grads(a), _grads(b)
    for name in ga:
        if ga[name] is None:
            assert gb[name] is None
        else:
            torch.testing.assert_close(ga[name], gb[name], rtol=1e-5, atol=1e-6)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=n)
    assert res_a.loss == pytest.approx(res_b.loss, rel=1e-6)
    assert res_a.num_sets == res_b.num_sets == 4 and res_a.num_images == 6
    assert set(res_a.loss_per_sensor) == {"S2", "GF2"}


def test_unused_sensor_head_keeps_no_gradient_and_is_not_decayed():
    m = ToyModel()
    before = copy.deepcopy(m.heads["L8"].state_dict())
    _engine(m).step([collate_sets(SETS)], step=1)
    assert m.heads["L8"].weight.grad is None
    torch.testing.assert_close(m.heads["L8"].weight, before["weight"], rtol=0, atol=0)


def test_gradient_clipping_bounds_the_applied_gradient():
    m = ToyModel()
    res = _engine(m, grad_clip=0.01).step([collate_sets(SETS)], step=1)
    total = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in m.parameters() if p.grad is not None])
    )
    assert res.grad_norm > 0.01  # reported before clipping
    assert float(total) <= 0.01 * (1 + 1e-4)


def test_nonfinite_loss_skips_the_step_and_aborts_after_n_in_a_row():
    m = ToyModel(nan_steps=(1, 3, 4))
    eng = _engine(m, max_nonfinite_steps=2)
    start = copy.deepcopy(m.state_dict())
    r1 = eng.step([collate_sets(SETS)], step=1)
    assert r1.skipped and eng.nonfinite_total == 1 and eng.nonfinite_streak == 1
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, start[k], rtol=0, atol=0)  # no update on a skipped step
    assert all(p.grad is None for p in m.parameters())
    r2 = eng.step([collate_sets(SETS)], step=2)
    assert not r2.skipped and eng.nonfinite_streak == 0
    assert eng.step([collate_sets(SETS)], step=3).skipped
    with pytest.raises(NonFiniteLossError, match="2 consecutive steps"):
        eng.step([collate_sets(SETS)], step=4)
    assert eng.nonfinite_total == 3


def test_autocast_only_on_cuda_and_seeds_are_stable():
    assert isinstance(autocast_context(torch.device("cpu"), True), contextlib.nullcontext)
    assert isinstance(autocast_context(torch.device("cuda"), False), contextlib.nullcontext)
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else contextlib.nullcontext():
        ctx = autocast_context(torch.device("cuda"), True)
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    assert step_seed(0, 5, 1) == step_seed(0, 5, 1) != step_seed(0, 5, 0)
    assert 0 <= step_seed(123, 1) < 2**63


def test_empty_step_on_every_worker_is_an_error():
    with pytest.raises(ValueError, match="no image set"):
        _engine(ToyModel()).step([collate_sets([])], step=1)


# ------------------------------------------------------------------------------ two real processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        m = ToyModel()
        if rank == 1:  # a different initialisation: the engine broadcasts rank 0's weights first
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(1.0)
        eng = _engine(m, rank=rank, world_size=2)
        eng.broadcast_parameters()
        mine = [collate_sets(SETS[rank::2])]  # rank 1 alone sees the GF2 image
        res = eng.step(mine, step=1)
        state = {k: v.contiguous() for k, v in m.state_dict().items()}
        state["loss"] = torch.tensor(res.loss)
        save_file(state, f"{out}/rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def test_two_workers_equal_one_worker_with_the_union_batch(tmp_path: Path):
    from safetensors.torch import load_file

    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    ref = ToyModel()
    res = _engine(ref).step([collate_sets(SETS)], step=1)
    for rank in (0, 1):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert float(got.pop("loss")) == pytest.approx(res.loss, rel=1e-6)
        for k, v in ref.state_dict().items():
            torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=f"rank {rank}: {k}")
