"""What one request may ask of a public server (the app on a Hugging Face Space), each limit
set by an environment variable, so a request too large is refused before any processing."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import OptionError
from .media import BROWSER_MAX_SIDE, MAX_VIDEO_SIDE, MediaLimits


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        return float(value) if value not in (None, "") else default
    except ValueError:
        raise OptionError(f"${name} must be a number, got {value!r}") from None


@dataclass(frozen=True)
class AppLimits:
    """What one request may ask of a public server; each is set by the environment variable
    in its comment (e.g. as a Hugging Face Space secret/variable). A request beyond a limit is
    refused with a message before any processing."""

    upload_mb: float = 50  # VIVID_MAX_UPLOAD_MB: largest uploaded file (checked by Gradio while receiving it)
    video_seconds: float = 60  # VIVID_MAX_VIDEO_SECONDS: longest driving video or motion template
    video_side: int = MAX_VIDEO_SIDE  # VIVID_MAX_VIDEO_SIDE: largest driving-video frame side, px
    image_pixels: int = 25_000_000  # VIVID_MAX_IMAGE_PIXELS: largest portrait (read from its header: bombs too)
    output_side: int = BROWSER_MAX_SIDE  # VIVID_MAX_OUTPUT_SIDE: larger portraits are animated scaled down to this
    job_seconds: float = 600  # VIVID_JOB_SECONDS: a job running longer is stopped
    media: MediaLimits = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "media", MediaLimits(
            max_image_pixels=int(self.image_pixels), max_video_side=int(self.video_side),
            max_video_frames=int(self.video_seconds * 120), max_video_seconds=self.video_seconds,
        ))

    @classmethod
    def from_env(cls) -> "AppLimits":
        """The limits, each overridden by its environment variable (LIMIT_VARIABLES) when set."""
        d = cls()
        values = {name: _env_number(var, getattr(d, name)) for name, var in LIMIT_VARIABLES.items()}
        return cls(**{k: int(v) if isinstance(getattr(d, k), int) else v for k, v in values.items()})


#: AppLimits field -> the environment variable that sets it.
LIMIT_VARIABLES = {
    "upload_mb": "VIVID_MAX_UPLOAD_MB", "video_seconds": "VIVID_MAX_VIDEO_SECONDS",
    "video_side": "VIVID_MAX_VIDEO_SIDE", "image_pixels": "VIVID_MAX_IMAGE_PIXELS",
    "output_side": "VIVID_MAX_OUTPUT_SIDE", "job_seconds": "VIVID_JOB_SECONDS",
}


__all__ = ["AppLimits", "LIMIT_VARIABLES"]
