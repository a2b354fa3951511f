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

#: What MediaPipe imports but the face mesh never uses (parents before their submodules).
UNUSED_MEDIAPIPE_IMPORTS = ("matplotlib", "matplotlib.pyplot", "sounddevice")


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
    Modules already imported, or not installed, are left alone."""
    deferred = []
    for name in names:
        if name in sys.modules:
            continue
        parent, _, child = name.rpartition(".")
        if parent and not isinstance(sys.modules.get(parent), DeferredModule):
            continue  # a real parent: importing the submodule the normal way costs the same
        search = sys.modules[parent].__spec__.submodule_search_locations if parent else None
        spec = importlib.machinery.PathFinder.find_spec(name, search)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            continue
        module = importlib.util.module_from_spec(spec)
        module.__class__ = DeferredModule
        sys.modules[name] = module
        if parent:
            setattr(sys.modules[parent], child, module)
        deferred.append(name)
    return deferred
