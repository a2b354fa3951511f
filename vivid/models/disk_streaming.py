"""Networks that run once per video kept on disk: each layer's weights are read only while
that layer runs (accelerate's disk offload), so memory holds the networks that run at every
step plus one layer of the others. On a CPU the weights are most of the memory: at bf16,
CLIP and the ReferenceNet are 2.3e9 of the SD1.5-sized model's 6.4e9 bytes."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

#: The networks that run once per video (encoding the reference), in pipeline component names.
ONCE_PER_VIDEO = ("image_encoder", "reference_net")


def _execution_device(module: nn.Module) -> torch.device | None:
    for part in module.modules():  # the layers' hooks know it; the outer one only aligns inputs and outputs
        device = getattr(getattr(part, "_hf_hook", None), "execution_device", None)
        if device is not None:
            return torch.device(device)
    return None


def run_device(module: nn.Module) -> torch.device:
    """Where `module` computes: its layers' execution device if it streams its weights
    (they sit on the meta device between calls), else its weights' device."""
    return _execution_device(module) or next(module.parameters()).device


def is_streamed(module: nn.Module) -> bool:
    """Whether `module` reads its weights from disk while it runs (`stream_from_*`)."""
    return _execution_device(module) is not None


def stream_from_files(module: nn.Module, files: dict[str, Path], device: torch.device) -> None:
    """Run `module` (built on the meta device) with its weights read from safetensors files,
    `files[name]` holding tensor `name` under its state-dict name (a saved model's own files:
    nothing is copied). Each tensor is converted to the parameter's dtype as it is read."""
    from accelerate.utils import OffloadedWeightsLoader, set_module_tensor_to_device
    from safetensors import safe_open

    index = {name: {"safetensors_file": str(file), "weight_name": name} for name, file in files.items()}
    for name, _ in module.named_buffers():  # saved buffers stay in memory (they are small): read them now
        if name in files:
            with safe_open(str(files[name]), framework="pt") as f:
                set_module_tensor_to_device(module, name, device, value=f.get_tensor(name))
    _attach(module, OffloadedWeightsLoader(index=index), device)


def stream_from_folder(module: nn.Module, folder: Path, device: torch.device) -> None:
    """Write `module`'s weights to `folder` (accelerate's memory-mapped format, in their own
    dtype), free them, and from then on read each layer's from there while it runs."""
    from accelerate.utils import OffloadedWeightsLoader, offload_state_dict

    offload_state_dict(str(folder), module.state_dict())
    _attach(module, OffloadedWeightsLoader(save_folder=str(folder)), device)


def set_run_device(module: nn.Module, device: torch.device) -> None:
    """Where a streamed `module`'s layers run from now on (its weights stay on disk)."""
    for part in module.modules():
        hook = getattr(part, "_hf_hook", None)
        if getattr(hook, "execution_device", None) is not None:
            hook.execution_device = device
    for name, buffer in module.named_buffers():  # buffers live where the layers run
        if buffer.device != device:
            from accelerate.utils import set_module_tensor_to_device

            set_module_tensor_to_device(module, name, device)


def _attach(module: nn.Module, weights, device: torch.device) -> None:
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module, attach_align_device_hook

    # Outputs come back where the inputs were; the parameters go to meta here and are filled
    # per layer (cast to the parameter's dtype, so a later change of precision still holds).
    add_hook_to_module(module, AlignDevicesHook(io_same_device=True), append=True)
    attach_align_device_hook(module, execution_device=device, offload=True, weights_map=weights)
