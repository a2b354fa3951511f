"""Networks that run once per video kept on disk: each layer's weights are read only while
that layer runs (accelerate's offload hooks, fed read-only views of safetensors files mapped
into memory), so memory holds the networks that run at every step plus one layer of the
others. On a CPU the weights are most of the memory: at bf16, CLIP and the ReferenceNet are
2.3e9 of the SD1.5-sized model's 6.4e9 bytes. Inference only: nothing may write to them."""
from __future__ import annotations

import json
import mmap
import os
import shutil
import sys
import tempfile
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from ..memory import release_memory
from ..paths import host_tag, owner_tag, process_alive
from .saved import safetensors_header
from .weights import SAFETENSORS_DTYPES, stream_safetensors

#: The networks that run once per video (encoding the reference), in pipeline component names.
ONCE_PER_VIDEO = ("image_encoder", "reference_net")
#: Prefix of the folders that hold converted or in-memory-built weights while a process runs.
FOLDER_PREFIX = "offload-"


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
    """Whether `module` reads its weights from disk while it runs (`stream_from_files`,
    `stream_from_memory`)."""
    return _execution_device(module) is not None


def offload_root() -> Path:
    """Where weights written for streaming go: $VIVID_OFFLOAD_DIR, else the user's cache
    (~/.cache/vivid/offload), which is on disk; /tmp is RAM on many systems."""
    if os.environ.get("VIVID_OFFLOAD_DIR"):
        return Path(os.environ["VIVID_OFFLOAD_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vivid" / "offload"


def new_offload_folder(label: str = "") -> Path:
    """A fresh folder under `offload_root` named after this machine and process; folders
    that processes of this machine left behind (killed before cleaning up) are removed
    first. Other machines' folders (a shared cache) are left alone. Falls back to the
    system's temporary folder where the cache cannot be written."""
    root = offload_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        root = Path(tempfile.gettempdir())
    sweep_dead_offload_folders(root)
    return Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{owner_tag()}-{label + '-' if label else ''}", dir=root))


def sweep_dead_offload_folders(root: Path | None = None) -> None:
    """Remove the offload folders that processes of this machine left when they were killed
    (a server restarted after `kill -9`); other machines' folders (a shared cache) stay."""
    root = root or offload_root()
    mine = f"{FOLDER_PREFIX}{host_tag()}-"
    for old in root.glob(mine + "*") if root.is_dir() else []:
        pid = old.name.removeprefix(mine).split("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)


class MappedSafetensors(Mapping):
    """Tensors of safetensors files by name, each a view of its bytes in the file mapped into
    memory (no copy: the pages are the OS's file cache). The mapping lives as long as the
    tensor, so once a layer lets its weights go they stop counting as this process's memory."""

    def __init__(self, files: dict[str, Path]):
        self._entries: dict[str, tuple[Path, int, int, torch.dtype, list[int]]] = {}
        for file in set(files.values()):
            length, header = safetensors_header(file)
            for name, info in header.items():
                if files.get(name) == file:
                    start, end = info["data_offsets"]
                    self._entries[name] = (file, 8 + length + start, end - start, SAFETENSORS_DTYPES[info["dtype"]], info["shape"])

    def stored_dtype(self, name: str) -> torch.dtype:
        """The dtype tensor `name` has in its file."""
        return self._entries[name][3]

    def __getitem__(self, name: str) -> torch.Tensor:
        file, start, size, dtype, shape = self._entries[name]
        if size == 0:
            return torch.empty(shape, dtype=dtype)
        if sys.byteorder != "little":  # the files are little-endian: safetensors' loader swaps the bytes
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as f:
                return f.get_tensor(name)
        aligned = start - start % mmap.ALLOCATIONGRANULARITY
        with open(file, "rb") as f:
            view = mmap.mmap(f.fileno(), start - aligned + size, offset=aligned, prot=mmap.PROT_READ,
                             flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.frombuffer(view, dtype=dtype, count=size // dtype.itemsize, offset=start - aligned).view(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def write_safetensors(path: Path, specs: dict[str, torch.Tensor], tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
    """A safetensors file of the tensors `specs` describes (name -> a tensor of that dtype
    and shape, e.g. on meta), filled from `tensors` in any order, one at a time: memory
    holds one tensor, never the whole network."""
    names = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
    header, offset = {}, 0
    for name, spec in specs.items():
        size = spec.numel() * spec.element_size()
        header[name] = {"dtype": names[spec.dtype], "shape": list(spec.shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little") + encoded)
        f.truncate(8 + len(encoded) + offset)
        for name, tensor in tensors:
            f.seek(8 + len(encoded) + header[name]["data_offsets"][0])
            f.write(tensor.to(specs[name].dtype).reshape(-1).view(torch.uint8).numpy())  # its buffer: no copy


def stream_from_files(module: nn.Module, files: dict[str, Path], device: torch.device, label: str = "") -> None:
    """Run `module` (built on the meta device) with its weights read from safetensors files,
    `files[name]` holding tensor `name` under its state-dict name (a saved model's own files).
    Tensors stored in the dtype the module runs in are read from there; the others are
    converted once into a file of their own (`new_offload_folder(label)`, removed with the
    module), so each video reads the run dtype's bytes: fp32 files read as bf16 took 1.1-1.5 s
    per video for the SD1.5-sized ReferenceNet, the converted file 0.2 s."""
    from accelerate.utils import set_module_tensor_to_device

    own = module.state_dict()  # meta tensors: names, shapes and the dtypes the module runs in
    weights = MappedSafetensors(files)
    convert = {name: own[name] for name in files
               if own[name].is_floating_point() and weights.stored_dtype(name) != own[name].dtype}
    if convert:
        converted = _owned_folder(module, None, label) / "weights.safetensors"
        targets = {t.dtype for t in convert.values()}  # one, the run dtype: converted straight from the read buffer
        read_as = targets.pop() if len(targets) == 1 else None
        write_safetensors(converted, convert, ((name, tensor) for file in sorted({files[n] for n in convert})
                                               for name, tensor in stream_safetensors(file, read_as) if name in convert))
        weights = MappedSafetensors({name: converted if name in convert else file for name, file in files.items()})
    for name, _ in module.named_buffers():  # saved buffers stay in memory (they are small): read them now
        if name in files:
            set_module_tensor_to_device(module, name, device, value=weights[name].clone())
    _attach(module, weights, device)
    return_freed_memory()


def stream_from_memory(module: nn.Module, device: torch.device, folder: Path | None = None, label: str = "") -> None:
    """Write `module`'s weights to a safetensors file in `folder` (default: a
    `new_offload_folder(label)`, removed with the module), free them, and from then on read
    each layer's from there while it runs."""
    state = module.state_dict()
    file = _owned_folder(module, folder, label) / "weights.safetensors"
    write_safetensors(file, state, state.items())
    _attach(module, MappedSafetensors(dict.fromkeys(state, file)), device)
    del state
    return_freed_memory()


def _owned_folder(module: nn.Module, folder: Path | None, label: str) -> Path:
    """`folder` (made if missing), or a new offload folder that lives as long as `module`."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    folder = new_offload_folder(label)
    weakref.finalize(module, shutil.rmtree, folder, ignore_errors=True)
    return folder


def set_run_device(module: nn.Module, device: torch.device) -> None:
    """Where a streamed `module`'s layers run from now on (its weights stay on disk)."""
    from accelerate.utils import set_module_tensor_to_device

    for part in module.modules():
        hook = getattr(part, "_hf_hook", None)
        if getattr(hook, "execution_device", None) is not None:
            hook.execution_device = device
    for name, buffer in module.named_buffers():  # buffers live where the layers run
        if buffer.device != device:
            set_module_tensor_to_device(module, name, device)


def return_freed_memory() -> None:
    """Hand the heap pages of freed weights back to the system (`vivid.memory.release_memory`)."""
    release_memory(full=True)


def _attach(module: nn.Module, weights, device: torch.device) -> None:
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module, attach_align_device_hook

    # Outputs come back where the inputs were; the parameters go to meta here and are filled
    # per layer (cast to the parameter's dtype, so a later change of precision still holds).
    add_hook_to_module(module, AlignDevicesHook(io_same_device=True), append=True)
    attach_align_device_hook(module, execution_device=device, offload=True, weights_map=weights)
