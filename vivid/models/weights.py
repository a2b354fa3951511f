"""Loading trained weights strictly and without pickle."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from ..errors import WeightsError
from .saved import safetensors_header, tensor_shapes
from .empty_init import empty_parameters


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """safetensors, or a torch file loaded with weights_only=True (never arbitrary pickle)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure is the same problem for the user
        raise WeightsError(f"{path}: not a readable weights file ({exc})") from exc
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _problems(own: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """What keeps a state dict with these tensor shapes from fitting `own` exactly."""
    missing = sorted(set(own) - set(shapes))
    unexpected = sorted(set(shapes) - set(own))
    wrong = sorted(k for k in set(own) & set(shapes) if tuple(own[k].shape) != tuple(shapes[k]))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} with the wrong shape (e.g. {k}: file {tuple(shapes[k])}, expected {tuple(own[k].shape)})")
    return problems


def load_strict(module: nn.Module, path: str | Path, what: str) -> None:
    """Load `path` into `module`; every key must be present with the right shape. A
    safetensors file is checked from its header and copied into the module's own tensors
    (`copy_safetensors_into`), so memory never holds the file's copy of a network."""
    path = Path(path)
    direct = path.suffix == ".safetensors" and path.is_file() and sys.byteorder == "little"
    state = None if direct else read_state_dict(path)
    shapes = tensor_shapes(path) if direct else {k: tuple(v.shape) for k, v in state.items()}
    own = module.state_dict()
    problems = _problems(own, shapes)
    if problems:
        raise WeightsError(f"{path} does not fit the {what}: " + "; ".join(problems))
    if direct:
        copy_safetensors_into(path, own)
    else:
        module.load_state_dict(state, strict=True)


#: Bytes read at a time when a file's tensors are copied into a module's own: the whole
#: overhead of a load (reading SD 1.5's UNet took the same time with 4 and 16 MiB).
READ_CHUNK = 4 * 2**20


def copy_safetensors_into(path: str | Path, own: dict[str, torch.Tensor]) -> None:
    """Copy each tensor of a (little-endian) safetensors file into the tensor of the same
    name in `own`, converted to its dtype on the way (`_fill_from_safetensors`)."""
    for _ in _fill_from_safetensors(path, lambda name, stored, shape: own[name]):
        pass


def _fill_from_safetensors(path: str | Path, target: Callable[[str, torch.dtype, list[int]], torch.Tensor]
                           ) -> Iterator[tuple[str, torch.Tensor]]:
    """For each tensor of a little-endian safetensors file, fill `target(name, stored dtype,
    shape)` with its values, converted on the way, a READ_CHUNK at a time, and yield it:
    memory grows by one chunk, not by a tensor (an fp32 conv of the SD 1.5 UNet is 118 MB)."""
    path = Path(path)
    length, tensors = safetensors_header(path)
    largest = max((end - start for start, end in (v["data_offsets"] for v in tensors.values())), default=0)
    buffer = bytearray(min(READ_CHUNK, largest))
    with open(path, "rb") as f, torch.no_grad():
        for name, info in tensors.items():
            if info["dtype"] not in SAFETENSORS_DTYPES:
                raise WeightsError(f"{path}: tensor {name} has the unsupported dtype {info['dtype']}")
            stored = SAFETENSORS_DTYPES[info["dtype"]]
            start, end = info["data_offsets"]
            into = target(name, stored, info["shape"])
            flat = into.view(-1) if into.is_contiguous() else torch.empty(into.numel(), dtype=into.dtype)
            f.seek(8 + length + start)
            per_chunk, total, done = len(buffer) // stored.itemsize, (end - start) // stored.itemsize, 0
            while done < total:
                count = min(per_chunk, total - done)
                if f.readinto(memoryview(buffer)[: count * stored.itemsize]) != count * stored.itemsize:
                    raise WeightsError(f"{path}: the file ends inside tensor {name} (truncated download?)")
                flat[done: done + count].copy_(torch.frombuffer(buffer, dtype=stored, count=count))
                done += count
            if flat.data_ptr() != into.data_ptr():
                into.copy_(flat.view(into.shape))
            yield name, into


#: safetensors' dtype names (https://github.com/huggingface/safetensors, format section).
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def stream_safetensors(path: str | Path, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of a safetensors file one at a time, read with plain reads, floating ones
    converted to `dtype`. safetensors' own loader maps the whole file, and every page it
    touches counts as this process's memory until the file is closed: reading fp32 files
    into bf16 networks would hold the fp32 file and the bf16 copy at once (4.3 GB above
    the steady state for the SD1.5-sized model); this way the cost is one read chunk."""
    path = Path(path)
    if sys.byteorder != "little":  # files are little-endian: safetensors' loader swaps the bytes
        from safetensors.torch import load_file

        for name, tensor in load_file(str(path)).items():
            yield name, tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
        return
    # Each tensor allocated once, in the dtype it is wanted in, and filled a chunk at a time.
    yield from _fill_from_safetensors(path, lambda name, stored, shape: torch.empty(
        shape, dtype=dtype if dtype is not None and stored.is_floating_point else stored))


def weight_files(folder: str | Path) -> list[Path]:
    """The safetensors files that hold one saved network, chosen as diffusers and transformers
    do: the shards an index lists, else the plain weights file(s); a variant such as
    `model.fp16.safetensors` lying beside them is not read too."""
    folder = Path(folder)
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    plain = [i for i in indexes if i.name.count(".") == 3]  # name.safetensors.index.json
    for index in plain or indexes:
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise WeightsError(f"{index}: not a readable shard index ({exc})") from exc
        return [folder / shard for shard in shards]
    files = sorted(folder.glob("*.safetensors"))
    return [f for f in files if f.name.count(".") == 1] or files


def empty_network(cls: type[nn.Module], folder: str | Path, dtype: torch.dtype,
                  files: list[Path] | None = None) -> tuple[nn.Module, dict[str, Path]]:
    """A saved diffusers or transformers network built on the meta device in `dtype` (no
    random initialisation, no tensor read), and the file that holds each of its tensors:
    `files`, or the folder's own weights files. The shapes are compared with the config from
    the files' headers, so a network that does not fit its files fails here."""
    folder = Path(folder)
    model = _from_config(cls, folder)
    files = weight_files(folder) if files is None else files
    shapes, source = {}, {}
    for file in files:
        for key, shape in tensor_shapes(file).items():
            if key in source:
                raise WeightsError(f"{file} and {source[key]} both hold {key}; one network's files should not overlap")
            shapes[key], source[key] = shape, file
    own = model.state_dict()
    for key in sorted(own.keys() & shapes.keys()):
        if tuple(own[key].shape) != shapes[key]:
            raise WeightsError(
                f"{source[key]} does not fit its config: {key} is ({', '.join(map(str, shapes[key]))}) in the file "
                f"but ({', '.join(map(str, own[key].shape))}) in {folder.name}/config.json; the weights and the config "
                "come from different models")
    problems = _problems(own, shapes)
    if problems:
        where = ", ".join(str(f) for f in sorted(set(source.values()))) or str(folder)
        raise WeightsError(f"{where}: the weights file does not fit {folder.name}/config.json: " + "; ".join(problems)
                           + "; the weights and the config come from different models")
    return nn.Module.to(model, dtype).eval(), source


def _from_config(cls: type[nn.Module], folder: Path) -> nn.Module:
    """The network of `folder`'s config with its parameters on the meta device (this thread only)."""
    with empty_parameters():  # parameters on meta, this thread only; buffers (e.g. position ids) real
        if hasattr(cls, "load_config"):  # diffusers' ModelMixin
            return cls.from_config(cls.load_config(folder))
        return cls(cls.config_class.from_pretrained(folder))  # transformers' PreTrainedModel


def load_pickled_network(cls: type[nn.Module], folder: str | Path, file: str | Path, dtype: torch.dtype) -> nn.Module:
    """A saved network whose weights are in torch's format (`file`, read with weights_only: no
    code runs), in `dtype`, checked strictly. Never through the libraries' own loaders: they
    patch process-wide state while they build (accelerate's `init_empty_weights` replaces
    `nn.Module.register_parameter`, transformers' `no_init_weights` torch's init functions),
    which the app's other threads, building their own networks meanwhile, would inherit."""
    folder = Path(folder)
    model = _from_config(cls, folder)
    own = model.state_dict()
    state = {k: v for k, v in read_state_dict(file).items()
             if k in own or not k.endswith("position_ids")}  # older files keep a buffer now not saved
    problems = _problems(own, {k: tuple(v.shape) for k, v in state.items()})
    if problems:
        raise WeightsError(f"{file} does not fit {folder.name}/config.json: " + "; ".join(problems))
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=True)  # strict by `_problems`; unsaved buffers stay as built
    return nn.Module.to(model, dtype).eval()


def load_network(cls: type[nn.Module], folder: str | Path, dtype: torch.dtype) -> nn.Module:
    """A saved diffusers or transformers network (`empty_network`) in `dtype`: its tensors
    are allocated once in `dtype` and filled from the safetensors files a chunk at a time
    (`copy_safetensors_into`), so loading takes the network's size and one chunk."""
    from accelerate.utils import set_module_tensor_to_device

    model, source = empty_network(cls, folder, dtype)
    if sys.byteorder != "little":  # safetensors' own loader swaps the bytes
        state = {key: tensor for file in sorted(set(source.values())) for key, tensor in stream_safetensors(file, dtype)}
        model.load_state_dict(state, strict=True, assign=True)
        return nn.Module.to(model, dtype).eval()
    for name, tensor in model.state_dict().items():  # buffers too: one may be an expanded view, not writable
        set_module_tensor_to_device(model, name, "cpu", value=torch.empty(tensor.shape, dtype=tensor.dtype))
    own = model.state_dict()
    for file in sorted(set(source.values())):
        copy_safetensors_into(file, own)
    return nn.Module.to(model, dtype).eval()  # floating buffers follow; parameters are already there
