"""Prepare training clips from talking-head videos (see train/README.md, "Prepare the data").

    python train/prepare_data.py VIDEOS_OR_FOLDERS... -o DATA [--resolution 512] [--fps 25]
                                 [--workers N] [--shard K/N] [--min-frames 24] ...
    python train/prepare_data.py --reindex -o DATA

Only translates arguments into `vivid.training.prepare`; errors become one line on stderr.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vivid.disk_space import as_disk_full  # noqa: E402
from vivid.training.clip_maker import PrepareConfig  # noqa: E402

DEFAULTS = PrepareConfig()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python train/prepare_data.py",
        description="Track, crop and store talking-head videos as training clips in DATA "
                    "(DATA/index.jsonl, DATA/rejected.jsonl, DATA/clips/). Safe to stop and run again.",
    )
    p.add_argument("inputs", nargs="*", metavar="VIDEO_OR_FOLDER", help="videos, or folders searched recursively")
    p.add_argument("-o", "--output", required=True, metavar="DATA", help="data folder (created; added to on reruns)")
    p.add_argument("--resolution", type=int, default=DEFAULTS.resolution, help="side of the square frames in px (default %(default)s)")
    p.add_argument("--fps", type=float, default=DEFAULTS.fps, help="clip frame rate; 0 keeps each video's own (default %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="processes working on videos at once (default %(default)s)")
    p.add_argument("--shard", default=None, metavar="K/N", help="prepare only share K of N (1 <= K <= N), for several machines")
    p.add_argument("--min-frames", type=int, default=DEFAULTS.min_frames, help="shortest clip kept, in clip frames (default %(default)s)")
    p.add_argument("--max-clip-frames", type=int, default=DEFAULTS.max_clip_frames,
                   help="longer pieces are split evenly; 0: never split (default %(default)s)")
    p.add_argument("--min-face-ratio", type=float, default=DEFAULTS.min_face_ratio,
                   help="smallest face kept, as a fraction of --resolution in source px (default %(default)s: 128 px at 512)")
    p.add_argument("--reference-every", type=int, default=DEFAULTS.reference_every,
                   help="every Nth frame with a detected face may be a reference and gets a person mask (default %(default)s)")
    p.add_argument("--jpeg-quality", type=int, default=DEFAULTS.jpeg_quality, help="default %(default)s")
    p.add_argument("--max-frames", type=int, default=None, help="read only the first N frames of each video (quick trials)")
    p.add_argument("--reindex", action="store_true", help="only rebuild DATA/index.jsonl from DATA/sources (after merging shards)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vivid.native_log import filter_native_stderr
    from vivid.training.clips import DataError
    from vivid.training.prepare import UsageError, parse_shard, prepare, rebuild_index

    filter_native_stderr()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        if args.reindex:
            if args.inputs:
                raise UsageError("--reindex takes no inputs, only -o DATA")
            if not Path(args.output).is_dir():
                raise UsageError(f"{args.output}: no such data folder")
            summary = rebuild_index(args.output)
        else:
            if not args.inputs:
                raise UsageError("give at least one video or folder (or --reindex)")
            for name in ("resolution", "min_frames", "reference_every"):
                if getattr(args, name) < 1:
                    raise UsageError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
            if args.fps < 0 or args.max_clip_frames < 0 or not 1 <= args.jpeg_quality <= 100:
                raise UsageError("--fps and --max-clip-frames must be >= 0 and --jpeg-quality within 1..100")
            if args.max_frames is not None and args.max_frames < 1:
                raise UsageError(f"--max-frames must be at least 1, not {args.max_frames}")
            config = PrepareConfig(
                resolution=args.resolution, fps=args.fps, min_frames=args.min_frames,
                max_clip_frames=args.max_clip_frames, min_face_ratio=args.min_face_ratio,
                reference_every=args.reference_every, jpeg_quality=args.jpeg_quality, max_frames=args.max_frames,
            )
            shard = parse_shard(args.shard) if args.shard else None
            summary = prepare(args.inputs, args.output, config, workers=args.workers, shard=shard,
                              progress=not args.quiet)
    except (UsageError, DataError, OSError) as exc:
        print(f"prepare_data: error: {as_disk_full(exc) or exc}", file=sys.stderr)  # a full disk: its figures
        return 2
    except KeyboardInterrupt:
        print(f"prepare_data: interrupted; finished clips are in {args.output}/index.jsonl, "
              "run the same command again to continue", file=sys.stderr)
        return 130
    except Exception as exc:  # e.g. a worker process that died
        print(f"prepare_data: error: {type(exc).__name__}: {exc}; run the same command again to continue",
              file=sys.stderr)
        return 1
    for line in summary.lines():
        print(line)
    if summary.system_failures:  # not the videos' fault: a script running this must notice
        print(f"prepare_data: error: {summary.system_failures} videos failed for a reason other than their content "
              "(listed above); fix it and run the same command again to prepare them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
