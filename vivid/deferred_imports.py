"""Modules a dependency imports at start-up but we never use, run only when something first
uses them.

MediaPipe imports matplotlib's pyplot (for its drawing helpers) and sounddevice (for its
audio tasks) as it loads: about 0.5 s of its 0.7 s import, for code the face mesh never
calls. `vivid.face.mesh_backend` defers them before it imports MediaPipe, so every front end
(command line, app, evaluation, benchmarks) starts without them. `defer` puts a stand-in
module in their place that carries the real module's spec, so `import` statements are
satisfied without running anything, and runs the real module's code into itself the first
time any of its attributes is read.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
import types

#: What MediaPipe imports but the face mesh never uses (parents before their submodules): the
#: plotting and audio modules, its Tasks API (we run its graphs through `solutions`), and the
#: solutions for hands, whole bodies and objects, drawing and model downloads (~0.1 s more).
UNUSED_MEDIAPIPE_IMPORTS = (
    "matplotlib", "matplotlib.pyplot", "sounddevice", "mediapipe.tasks", "mediapipe.tasks.python",
    "mediapipe.python.solutions.drawing_styles", "mediapipe.python.solutions.drawing_utils",
    "mediapipe.python.solutions.hands", "mediapipe.python.solutions.holistic", "mediapipe.python.solutions.objectron",
    "mediapipe.python.solutions.download_utils",
)


class DeferredModule(types.ModuleType):
    """A module whose code runs when one of its attributes is first read."""

    _lock = threading.RLock()

    def __getattr__(self, attr: str):  # only called for attributes not (yet) there
        with DeferredModule._lock:  # two threads asking at once: the code runs once
            if type(self) is DeferredModule:
                self.__class__ = types.ModuleType
                self.__spec__.loader.exec_module(self)
        return getattr(self, attr)


def defer(names: tuple[str, ...] = UNUSED_MEDIAPIPE_IMPORTS) -> list[str]:
    """Put deferred stand-ins for `names` into `sys.modules`; returns the names deferred.
    Modules already imported, or not installed, are left alone. A submodule of a package not
    imported yet is found without running the package; `attach` then hangs it on its parent
    once the parent has been imported."""
    deferred = []
    for name in names:
        if name in sys.modules:
            continue
        parent, _, child = name.rpartition(".")
        if parent in sys.modules and not isinstance(sys.modules[parent], DeferredModule):
            continue  # a real parent already imported: importing the submodule the normal way costs the same
        spec = _find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            continue
        module = importlib.util.module_from_spec(spec)
        module.__class__ = DeferredModule
        sys.modules[name] = module
        if parent in sys.modules:
            setattr(sys.modules[parent], child, module)
        deferred.append(name)
    return deferred


def attach() -> None:
    """Make each deferred module an attribute of its parent package where the parent was
    imported after it was deferred (`import a.b` finds `a.b` in `sys.modules` and does not)."""
    for name, module in list(sys.modules.items()):
        parent, _, child = name.rpartition(".")
        if isinstance(module, DeferredModule) and parent in sys.modules and not hasattr(sys.modules[parent], child):
            setattr(sys.modules[parent], child, module)


def _find_spec(name: str):
    """The spec of module `name`, found along its parents' paths without importing any of them."""
    search = None
    spec = None
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        prefix = ".".join(parts[:depth])
        known = sys.modules.get(prefix)
        spec = known.__spec__ if known is not None and depth < len(parts) else importlib.machinery.PathFinder.find_spec(prefix, search)
        if spec is None:
            return None
        search = spec.submodule_search_locations
        if depth < len(parts) and search is None:
            return None  # a parent that is not a package
    return spec
