"""Prepared training clips on disk: the storage format, its writer and its reader.

`python train/prepare_data.py VIDEOS... -o DATA` (`vivid.training.prepare`) writes:

    DATA/
      index.jsonl       one line per kept clip, sorted by id: {"id", "path" (the clip folder,
                        relative to DATA), "frames", "fps", "resolution", "source" (the video),
                        "start" (source frame of the clip's first frame), "seconds"}
      rejected.jsonl    one line per rejected video or piece of a video: {"source", "reason",
                        "detail", "frames"}; reason is one of REASONS, detail says why in
                        words, frames is null for the whole video or [first, end) in frames
                        at the clip frame rate
      prepare.json      the settings DATA was made with; a rerun must use the same ones
      sources/<video id>.json   one record per finished source video: its clips and rejections
      clips/<clip id>/  one folder per clip:
        frames.bin      the JPEG bytes (baseline, 4:2:0) of every frame, concatenated
        clip.npz        zip-compressed arrays, no pickled objects (np.load(..., allow_pickle=False)):
          offsets           (F+1,) int64   frame i is frames.bin[offsets[i]:offsets[i+1]]
          landmarks         (F, 478, 2) float16  MediaPipe face-mesh points (x, y) in crop pixels,
                                           tracked and smoothed by vivid.face (iter_track)
          found             (F,) bool      False where the face was filled in or held from
                                           neighbouring frames (no detection in that frame)
          reference_frames  (K,) int64     frames that may serve as reference: every Nth found frame
          person_masks      (K, ceil(R*R/8)) uint8  np.packbits of each reference frame's (R, R)
                                           person mask (MediaPipe selfie segmentation on the crop),
                                           flattened row-major
          fps               () float64     frame rate of the clip
          resolution        () int64       R: every frame is R x R RGB
          square            (3,) float64   cx, cy, size of the crop square in source pixels
                                           (`vivid.face.SquareBox`; one square for the whole clip;
                                           where it leaves the source frame, border pixels repeat)
          source_size       (2,) int64     width, height of the (upright) source frames
          source_frames     (F,) int64     source video frame (decode order, from 0) of each frame
          source            () str         the source video
          version           () int64       FORMAT_VERSION

Writing protocol (what makes a killed run safe to rerun): a clip is written into a hidden
sibling `clips/.<id>.tmp-<host>-<pid>` and renamed to `clips/<id>` when complete, so a clip folder
either is whole or does not exist. A video's record `sources/<video id>.json` is written
(atomically) after all its clips; a video with a record is skipped on rerun, one without is
processed again (its finished clips are kept, not rewritten). index.jsonl and rejected.jsonl
are rebuilt from the records and replaced atomically, so they never hold a torn line and
list every clip exactly once. Ids come from the source path, so shards never collide and
their folders merge by copying (see train/README.md).

Reading: `read_index(DATA)` checks the index and returns its lines; `PreparedClip(folder)`
reads one clip (a random frame costs one file read and one JPEG decode, 1-3 ms at 512 px;
opening a clip ~10 ms).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

FORMAT_VERSION = 1
INDEX = "index.jsonl"
REJECTED = "rejected.jsonl"
SETTINGS = "prepare.json"
CLIPS = "clips"
SOURCES = "sources"
FRAMES_FILE = "frames.bin"
ARRAYS_FILE = "clip.npz"

#: Why a video (or a piece of one) was not kept.
REASONS = ("no face", "several faces", "face too small", "too short", "unreadable")

INDEX_KEYS = ("id", "path", "frames", "fps", "resolution", "source")


class DataError(ValueError):
    """Prepared data that cannot be used; the message names the file and what to do."""


# -- files written atomically ---------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so a reader (or a kill) never sees a partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{_writer_tag()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk: no partial record left behind
        tmp.unlink(missing_ok=True)
        raise


def _writer_tag() -> str:
    """Unique per process, also across machines sharing DATA on a network file system."""
    return f"{socket.gethostname()}-{os.getpid()}"


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Replace `path` with one JSON object per line, atomically."""
    write_atomic(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


# -- JPEG ------------------------------------------------------------------------------------
def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of an RGB uint8 image."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"could not encode a {rgb.shape} image as JPEG")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """RGB uint8 image from JPEG bytes."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"a frame of {len(data)} bytes is not a readable JPEG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """(R, R) bool -> (ceil(R*R/8),) uint8."""
    return np.packbits(np.asarray(mask, bool).reshape(-1))


def unpack_mask(packed: np.ndarray, resolution: int) -> np.ndarray:
    """Inverse of `pack_mask`."""
    return np.unpackbits(packed, count=resolution * resolution).reshape(resolution, resolution).astype(bool)


# -- writing one clip ------------------------------------------------------------------------
class ClipWriter:
    """Streams the frames of one clip into a temporary sibling folder; `finish` adds the
    arrays and renames it into place, `abort` removes it."""

    def __init__(self, folder: Path, quality: int = 95):
        self.folder = Path(folder)
        self.quality = quality
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.parent.glob(f".{self.folder.name}.tmp-*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        self.tmp = self.folder.with_name(f".{self.folder.name}.tmp-{_writer_tag()}")
        self.tmp.mkdir()
        self._bin = open(self.tmp / FRAMES_FILE, "wb")
        self.offsets = [0]
        self.resolution: int | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def add(self, rgb: np.ndarray) -> None:
        """Append one R x R RGB frame."""
        if rgb.ndim != 3 or rgb.shape[0] != rgb.shape[1] or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"clip frames must be (R, R, 3) uint8, got {rgb.shape} {rgb.dtype}")
        if self.resolution is None:
            self.resolution = rgb.shape[0]
        elif rgb.shape[0] != self.resolution:
            raise ValueError(f"frame of {rgb.shape[0]} px in a clip of {self.resolution} px")
        data = encode_jpeg(rgb, self.quality)
        self._bin.write(data)
        self.offsets.append(self.offsets[-1] + len(data))

    def finish(
        self,
        *,
        landmarks: np.ndarray,
        found: np.ndarray,
        reference_frames: Sequence[int],
        person_masks: np.ndarray,
        fps: float,
        square: Sequence[float],
        source_size: Sequence[int],
        source_frames: Sequence[int],
        source: str,
    ) -> Path:
        """Write clip.npz, then move the folder into place; returns the clip folder."""
        n = len(self)
        arrays = dict(
            offsets=np.asarray(self.offsets, np.int64),
            landmarks=np.asarray(landmarks, np.float16),
            found=np.asarray(found, bool),
            reference_frames=np.asarray(reference_frames, np.int64),
            person_masks=np.stack([pack_mask(m) for m in person_masks]) if len(person_masks)
            else np.zeros((0, ((self.resolution or 0) ** 2 + 7) // 8), np.uint8),
            fps=np.float64(fps),
            resolution=np.int64(self.resolution or 0),
            square=np.asarray(square, np.float64),
            source_size=np.asarray(source_size, np.int64),
            source_frames=np.asarray(source_frames, np.int64),
            source=np.str_(source),
            version=np.int64(FORMAT_VERSION),
        )
        for name in ("landmarks", "found", "source_frames"):
            if len(arrays[name]) != n:
                raise ValueError(f"{name} has {len(arrays[name])} entries for {n} frames")
        if len(arrays["person_masks"]) != len(arrays["reference_frames"]):
            raise ValueError("one person mask per reference frame is needed")
        self._bin.flush()
        os.fsync(self._bin.fileno())
        self._bin.close()
        with open(self.tmp / ARRAYS_FILE, "wb") as f:
            np.savez_compressed(f, **arrays)  # person masks shrink ~20x; loading stays ~10 ms
            f.flush()
            os.fsync(f.fileno())
        try:
            os.rename(self.tmp, self.folder)
        except OSError:  # another writer finished the same clip first: keep theirs
            if not (self.folder / ARRAYS_FILE).is_file():
                raise
            shutil.rmtree(self.tmp, ignore_errors=True)
        return self.folder

    def abort(self) -> None:
        """Drop the unfinished clip."""
        if not self._bin.closed:
            self._bin.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- reading -----------------------------------------------------------------------------
class PreparedClip:
    """One prepared clip: frames decoded on demand, landmarks and masks in memory.

    Safe to use from DataLoader worker processes (each read opens the file itself) and
    picklable. Frame indices run from 0 to len(clip) - 1.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        frames_file, arrays_file = self.path / FRAMES_FILE, self.path / ARRAYS_FILE
        if not frames_file.is_file() or not arrays_file.is_file():
            raise DataError(f"{self.path}: not a prepared clip (it needs {FRAMES_FILE} and {ARRAYS_FILE})")
        try:
            with np.load(arrays_file, allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise DataError(f"{arrays_file}: unreadable ({exc}); delete the clip folder and prepare it again") from exc
        missing = {"offsets", "landmarks", "found", "reference_frames", "person_masks", "fps", "resolution"} - set(a)
        if missing:
            raise DataError(f"{arrays_file}: lacks {', '.join(sorted(missing))}; prepare the clip again")
        self.offsets: np.ndarray = a["offsets"]
        self.fps = float(a["fps"])
        self.resolution = int(a["resolution"])
        self.landmarks: np.ndarray = a["landmarks"].astype(np.float32)  # (F, 478, 2) crop pixels
        self.found: np.ndarray = a["found"]
        self.reference_frames: np.ndarray = a["reference_frames"]
        self._person = a["person_masks"]
        self.square: np.ndarray = a.get("square", np.full(3, np.nan))  # cx, cy, size in source px
        self.source_size: np.ndarray = a.get("source_size", np.zeros(2, np.int64))  # width, height
        self.source_frames: np.ndarray = a.get("source_frames", np.arange(len(self.found)))
        self.source = str(a.get("source", ""))
        n = len(self.offsets) - 1
        size = frames_file.stat().st_size
        if len(self.landmarks) != n or len(self.found) != n or size != int(self.offsets[-1]):
            raise DataError(
                f"{self.path}: inconsistent clip ({n} frame offsets, {len(self.landmarks)} landmark rows, "
                f"{size} bytes of frames for {int(self.offsets[-1])} expected); delete it and prepare it again"
            )
        self._ref_slot = {int(f): k for k, f in enumerate(self.reference_frames)}

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __repr__(self) -> str:
        return f"PreparedClip({str(self.path)!r}, frames={len(self)}, fps={self.fps:g}, resolution={self.resolution})"

    def _check(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"frame {i} is outside {self.path.name}'s {len(self)} frames")
        return i

    def jpeg(self, i: int) -> bytes:
        """The stored JPEG bytes of frame i."""
        return self._read([self._check(i)])[0]

    def _read(self, indices: list[int]) -> list[bytes]:
        out = []
        with open(self.path / FRAMES_FILE, "rb") as f:
            for i in indices:
                f.seek(int(self.offsets[i]))
                out.append(f.read(int(self.offsets[i + 1] - self.offsets[i])))
        return out

    def frame(self, i: int) -> np.ndarray:
        """(R, R, 3) uint8 RGB frame i."""
        return decode_jpeg(self.jpeg(i))

    def frames(self, indices: Iterable[int]) -> np.ndarray:
        """(n, R, R, 3) uint8 RGB frames (e.g. `range(s, s + 24)` for a run)."""
        idx = [self._check(i) for i in indices]
        if not idx:
            return np.zeros((0, self.resolution, self.resolution, 3), np.uint8)
        return np.stack([decode_jpeg(b) for b in self._read(idx)])

    def person(self, frame: int) -> np.ndarray:
        """(R, R) bool person mask of `frame`, which must be one of `reference_frames`."""
        k = self._ref_slot.get(int(frame))
        if k is None:
            raise KeyError(f"frame {frame} of {self.path.name} is not a reference frame (those have person masks)")
        return unpack_mask(self._person[k], self.resolution)


def read_index(data: str | Path) -> list[dict]:
    """The clips listed in DATA/index.jsonl, each line's fields plus "folder" (absolute path
    of the clip folder). Raises DataError, one line, for a missing or empty DATA, a malformed
    line, or a line pointing to a missing clip."""
    data = Path(data)
    hint = f"prepare it with: python train/prepare_data.py VIDEOS... -o {data}"
    if not data.is_dir():
        raise DataError(f"{data}: no such data folder; {hint}")
    index = data / INDEX
    if not index.is_file():
        raise DataError(f"{data}: no {INDEX} in it; {hint}")
    entries = []
    for n, line in enumerate(index.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{index}:{n}: not a JSON line ({exc.msg})") from exc
        if not isinstance(entry, dict) or any(k not in entry for k in INDEX_KEYS):
            raise DataError(f"{index}:{n}: needs the fields {', '.join(INDEX_KEYS)}")
        folder = data / entry["path"]
        if not (folder / FRAMES_FILE).is_file() or not (folder / ARRAYS_FILE).is_file():
            raise DataError(
                f"{index}:{n}: clip {entry['id']} points to {folder}, which is missing or incomplete; "
                f"rebuild the index with: python train/prepare_data.py --reindex -o {data}"
            )
        entry["folder"] = str(folder.resolve())
        entries.append(entry)
    if not entries:
        rejected = data / REJECTED
        why = f" (see {rejected} for why videos were rejected)" if rejected.is_file() else ""
        raise DataError(f"{index} lists no clips{why}; {hint}")
    return entries
