"""Networks laid out without weights, on the building thread only.

accelerate's `init_empty_weights` puts parameters on the meta device by replacing
`nn.Module.register_parameter` for the whole process while a network is built: a network
that another thread builds meanwhile (the app builds FaRL, CLIP or a pipeline on request
threads) gets meta parameters too, and two overlapping uses can leave the replacement
installed for good. `empty_parameters` does the same for the calling thread only, through
torch's parameter-registration hook, installed once (at import) and asking which thread
registers. (`torch.device("meta")` is thread-local too, but also puts buffers on meta:
positional tables and ids that no weights file holds would be lost.)
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from torch import nn

_building = threading.local()  # .depth: how many `empty_parameters` blocks this thread is in


def _to_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> nn.Parameter | None:
    """The registration hook: inside an `empty_parameters` block of this thread, the
    parameter's meta counterpart (same class, dtype, shape, flags); elsewhere unchanged."""
    if not getattr(_building, "depth", 0) or param is None or param.is_meta:
        return None
    meta = type(param)(param.detach().to("meta"), requires_grad=param.requires_grad)
    meta.__dict__.update(param.__dict__)  # e.g. transformers' _is_hf_initialized
    return meta


nn.modules.module.register_module_parameter_registration_hook(_to_meta)


@contextmanager
def empty_parameters() -> Iterator[None]:
    """Parameters that this thread registers inside the block go to the meta device (no
    memory; their initialisation runs on meta, so costs nothing); buffers stay real, as
    with `init_empty_weights()`. Other threads build as usual meanwhile. Nests."""
    _building.depth = getattr(_building, "depth", 0) + 1
    try:
        yield
    finally:
        _building.depth -= 1
