"""Faces in images: analysis backends, labels, motion maps, random scaling, tracking, crops."""
from .analysis import FaceAnalysis, NoFaceError
from .analyzer import FaceAnalyzer, TrackConfig
from .crop import CropConfig, SquareBox, crop_analysis, crop_image, face_square, paste_crop, video_square
from .labels import EXPRESSION_PARTS, LABELS, colorize, label_mask
from .motion_map import MotionMapStyle, render_motion_map
from .motion_track import MotionTrack
from .random_scaling import component_centres, random_scale, scale_components
from .smoothing import SmoothingConfig
from .template import MotionTemplate

__all__ = [
    "FaceAnalysis", "NoFaceError", "FaceAnalyzer", "TrackConfig", "CropConfig", "SquareBox",
    "crop_analysis", "crop_image", "face_square", "paste_crop", "video_square", "EXPRESSION_PARTS",
    "LABELS", "colorize", "label_mask", "MotionMapStyle", "MotionTrack", "render_motion_map", "component_centres",
    "random_scale", "scale_components", "SmoothingConfig", "MotionTemplate",
]
