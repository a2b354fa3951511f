"""How the diffusion engine samples: its seven settings, their defaults and their one check.

`Sampling` is the one definition of the settings (window, overlap, cyclic, wrap, steps,
guidance, seed): `AnimateOptions` (the CLI's flags, the app's controls) is built on it, the
pipeline's `stream` takes its defaults from it, and `Sampling.checked` is the check every
front end and the pipeline run. Steps and guidance left as None mean "what the model
recommends": only the pipeline fills them in, from its own config
(`VividPipeline.check_inputs`). Torch-free, so refusing a bad value is instant.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from .checks import real, whole
from .windows import check_windows

#: Most denoising steps: the scheduler's training timesteps.
MAX_STEPS = 1000
#: Largest guidance scale accepted; useful values are about 2-5, beyond ~10 images burn.
MAX_GUIDANCE = 30.0
#: Largest seed torch's generators take.
MAX_SEED = 2**64 - 1
#: Frames the temporal layers attend over at most, when the model does not say (AnimateDiff).
DEFAULT_MAX_WINDOW = 32

DIFFUSION = "diffusion engine"


def option(default, help: str, group: str = DIFFUSION, **cli) -> Any:
    """A dataclass field that is a user option: its default, its one-line help and its group
    (the CLI's flags are made from these; `cli` holds the flag's own wording: `flag`, `metavar`,
    `choices`, `default_text` for a None that means something)."""
    return field(default=default, metadata={"help": help, "group": group, **cli})


def check_steps(steps) -> int:
    """Denoising steps as an int in [1, MAX_STEPS], else an OptionError."""
    return whole("steps", steps, 1, MAX_STEPS)


def check_guidance(guidance) -> float:
    """A classifier-free guidance scale as a float in [0, MAX_GUIDANCE], else an OptionError."""
    return real("guidance", guidance, 0.0, MAX_GUIDANCE)


@dataclass(frozen=True)
class Sampling:
    """The diffusion engine's sampling settings (keywords of `VividPipeline.stream`)."""

    window: int = option(24, "frames per context window (at most the model's temporal length)", metavar="FRAMES")
    overlap: int = option(4, "frames shared by neighbouring windows", metavar="FRAMES")
    cyclic: bool = option(True, "windows move one frame per step (the paper's cyclic overlap)")
    wrap: bool = option(False, "cyclic windows run past the last frame into the first (for looping clips)")
    steps: int | None = option(None, "denoising steps", metavar="N", default_text="what the model recommends")
    guidance: float | None = option(None, "classifier-free guidance scale (1 or less: none, half the UNet work, "
                                          "as in diffusers)", metavar="SCALE", default_text="what the model recommends")
    seed: int = option(0, "random seed", metavar="N")

    def checked(self, max_window: int = DEFAULT_MAX_WINDOW) -> "Sampling":
        """The settings checked (OptionError quoting the first bad value), whole numbers as
        ints (24.0 from a slider is 24); `max_window` is the model's temporal length. Steps and
        guidance may be None (the model's recommendation, checked where it is read)."""
        window, overlap = check_windows(self.window, self.overlap, self.cyclic, self.wrap, max_window)
        return replace(self, window=window, overlap=overlap, cyclic=bool(self.cyclic), wrap=bool(self.wrap),
                       steps=None if self.steps is None else check_steps(self.steps),
                       guidance=None if self.guidance is None else check_guidance(self.guidance),
                       seed=whole("seed", self.seed, 0, MAX_SEED))

    def keywords(self) -> dict:
        """The settings as keywords of `VividPipeline.stream` (also of a subclass's instance,
        e.g. `AnimateOptions`, which holds more)."""
        return {f.name: getattr(self, f.name) for f in fields(Sampling)}


__all__ = [
    "DEFAULT_MAX_WINDOW", "MAX_GUIDANCE", "MAX_SEED", "MAX_STEPS", "Sampling", "check_guidance", "check_steps",
    "option",
]
