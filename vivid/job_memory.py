"""Memory a job will take, checked against what the machine has available before the job
starts, so a job too large is refused with the figures (and what would fit) instead of being
killed by the system halfway (peers: RAM blow-up on long videos, LivePortrait #438; out of
memory, Moore-AnimateAnyone #3, #113).

The estimate is of what a job adds to a process whose models are loaded already: what it holds
for every frame of the video (the tracked driving motion; the diffusion engine's latents), and
its working memory, which does not grow with the length (the diffusion engine's activations
for one window; picture buffers at the output size). The coefficients are measured peaks
(bench/RESULTS.md, "Memory ceiling"), rounded up: an estimate that errs refuses a job that
would have fitted only when the margin is thin.

Available memory is the smallest of: the system's MemAvailable, the room left under this
process's cgroup limit (a container's, e.g. a Space's), and $VIVID_MEMORY_LIMIT_MB (the
memory this process may use in all, for a server sharing its machine) minus what it holds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import OptionError

#: Bytes the tracked driving motion holds per pixel of a driving frame, for every frame
#: (measured: preview engine at 512 px, 100 vs 400 frames: 27 KB a frame, 0.1 B/px; bench/job_memory.py).
TRACK_BYTES_PER_PIXEL = 0.25
#: Bytes the preview engine's working memory takes per pixel of the output (frames in flight
#: between its threads, warp maps, the encoder's copies, the face models' first-run buffers:
#: 206-214 MB above a loaded process at 512 px).
PREVIEW_BYTES_PER_PIXEL = 600
#: The diffusion engine's copies of each frame's latents over the whole video (latents, the
#: averaged prediction, the scheduler's output and estimate, the windows' predictions).
LATENT_COPIES = 8
#: Activations of the UNet for one frame of a window (per batch entry), in feature maps of its
#: first block's width at the latent resolution (mini model, bf16: 1.75 MB a window frame).
ACTIVATION_MAPS = 56
#: A floor for any job's working memory (decoders, the encoder, small buffers).
BASE_JOB_BYTES = 64 * 2**20
#: What a diffusion job holds whatever its size: the face analysers' and motion maps' buffers,
#: CLIP's and the VAE's activations (mini model: 375 MB above the loaded model in a fresh process).
DIFFUSION_BASE_BYTES = 384 * 2**20
#: What a suggested frame count or window leaves free at the least (or 5% of what is available):
#: the program's own size moves a little from run to run.
SUGGESTION_MARGIN = 32 * 2**20


class JobMemoryError(OptionError):
    """A job that would need more memory than the machine has available; the message gives
    both figures and the setting that would make it fit."""


@dataclass(frozen=True)
class MemoryNeed:
    """What one job needs beyond the loaded models, by cause (bytes)."""

    frames: int  # frames of the video
    per_frame: int  # held for each of them until the end
    working: int  # working memory that does not grow with the length
    window: int = 0  # frames in a denoising window (diffusion), and their share of `working`
    per_window_frame: int = 0

    @property
    def total(self) -> int:
        return self.frames * self.per_frame + self.working


def preview_need(frames: int, output_pixels: int, driving_pixels: int) -> MemoryNeed:
    """The preview engine: the tracked motion of every frame, picture buffers at the output size."""
    return MemoryNeed(frames, int(driving_pixels * TRACK_BYTES_PER_PIXEL),
                      BASE_JOB_BYTES + output_pixels * PREVIEW_BYTES_PER_PIXEL)


def diffusion_need(frames: int, driving_pixels: int, output_pixels: int, *, latent_pixels: int, latent_channels: int,
                   unet_width: int, window: int, guided: bool, dtype_bytes: int, warp_guidance: bool) -> MemoryNeed:
    """The diffusion engine: the tracked motion and fp32 latents of every frame (twice with warp
    guidance: the warped portrait's), and one window's activations (twice with guidance: both
    branches run in one batch)."""
    latents = latent_pixels * latent_channels * 4 * (LATENT_COPIES + (2 if warp_guidance else 0))
    per_window_frame = latent_pixels * unet_width * ACTIVATION_MAPS * dtype_bytes * (2 if guided else 1)
    working = DIFFUSION_BASE_BYTES + window * per_window_frame + output_pixels * PREVIEW_BYTES_PER_PIXEL // 4
    return MemoryNeed(frames, int(driving_pixels * TRACK_BYTES_PER_PIXEL) + latents, working, window, per_window_frame)


def available_memory() -> int:
    """Bytes this process may still allocate (see the module docstring)."""
    return memory_room()[0]


def memory_room() -> tuple[int, str]:
    """Bytes this process may still allocate, and where that limit comes from, in words."""
    figures = [(_meminfo("MemAvailable"), "on this machine"), (_cgroup_room(), "under the container's memory limit")]
    limit = os.environ.get("VIVID_MEMORY_LIMIT_MB")
    if limit:
        try:
            held = _own_rss()
            figures.append((int(float(limit) * 2**20) - held, f"under VIVID_MEMORY_LIMIT_MB={limit} (this program "
                                                                f"holds {size_text(held)})"))
        except ValueError:
            raise OptionError(f"$VIVID_MEMORY_LIMIT_MB must be a number of MB, got {limit!r}") from None
    known = [(f, where) for f, where in figures if f is not None]
    if not known:
        return 2**62, "(no limit known)"
    room, where = min(known)
    return max(0, room), where


def size_text(nbytes: float) -> str:
    """Memory for people: 850 MB, 3.2 GB."""
    return f"{nbytes / 2**30:.1f} GB" if nbytes >= 2**30 else f"{max(nbytes, 0) / 2**20:.0f} MB"


def check_fits(need: MemoryNeed, available: int | None = None, what: str = "this job") -> None:
    """Refuse `need` when it exceeds the available memory, saying what it needs, what there is,
    and the frame count, window or output size that would fit."""
    available, where = memory_room() if available is None else (available, "")
    if need.total <= available:
        return
    held = need.frames * need.per_frame
    parts = [f"{need.frames} frames hold {size_text(held)}"]
    if need.window:
        parts.append(f"a {need.window}-frame window {size_text(need.window * need.per_window_frame)}")
    head = (f"{what} needs about {size_text(need.total)} of memory ({', '.join(parts)}) and {size_text(available)} "
            f"is available" + (f" {where}" if where else ""))
    spare = available - max(SUGGESTION_MARGIN, available // 20)  # what is suggested fits with room to spare
    frames_fit = (spare - need.working) // need.per_frame if need.per_frame else 0
    if need.window and held <= spare and need.window > 1:
        room = spare - held - (need.working - need.window * need.per_window_frame)
        window_fit = int(room // need.per_window_frame) if need.per_window_frame else 0
        if window_fit >= 2:
            raise JobMemoryError(f"{head}: use a window of at most {window_fit} frames (window), or close other "
                                 "programs", "window")
    if frames_fit >= 1:
        raise JobMemoryError(f"{head}: use at most {frames_fit} frames (max_frames), or close other programs",
                             "max_frames")
    raise JobMemoryError(f"{head}: use a smaller portrait (max_side), or close other programs", "max_side")


def _meminfo(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _own_rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cgroup_room() -> int | None:
    """Room under this process's cgroup memory limit (v2 or v1); None without one."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            folder, limit_file, usage_file = Path("/sys/fs/cgroup" + path), "memory.max", "memory.current"
        elif "memory" in controllers.split(","):  # v1
            folder, limit_file, usage_file = Path("/sys/fs/cgroup/memory" + path), "memory.limit_in_bytes", \
                "memory.usage_in_bytes"
        else:
            continue
        try:
            limit = (folder / limit_file).read_text().strip()
            usage = int((folder / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # "max" or a huge v1 figure: no limit
            return int(limit) - usage
    return None


__all__ = ["JobMemoryError", "MemoryNeed", "available_memory", "check_fits", "diffusion_need", "memory_room",
           "preview_need"]
