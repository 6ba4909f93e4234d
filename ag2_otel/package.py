"""Which AG2 ag2-otel instruments, for opentelemetry-instrumentation's checks and for our own at instrument time.

AG2 "classic" is the ``autogen`` import package, published under three distribution names:

- ``autogen``: 0.14.1 ships the files itself; ``autogen`` 0.9 → 0.14.0 are 6-file metapackages that require
  ``ag2==`` (or, for 0.9, ``pyautogen==0.9``) of the same version;
- ``ag2`` 0.9.1.post0 → 0.14.0 ship the files (``ag2==0.9`` requires ``pyautogen==0.9``); ``ag2>=1.0`` is a different
  framework, imported as ``ag2``, with no ``autogen`` module;
- ``pyautogen`` 0.3 → 0.9 is AG2 too (0.9 ships the files); ``pyautogen<=0.2.35`` is Microsoft's AutoGen 0.2 and
  ``pyautogen==0.10.0`` an empty proxy for Microsoft's ``autogen-agentchat``.

So ag2-otel depends on none of them. The ``instruments-any`` extra in pyproject.toml (mirrored by ``_instruments_any``
here) lets ``opentelemetry-instrument``'s dependency check pass for any one of them at a supported version, and
:func:`check_ag2` decides at instrument time from the ``autogen`` module's own ``__version__``, whatever distribution
put it there (``autogen==0.14.1`` beside ``ag2==1.2.1`` share no files: the classic module is there and traced).

opentelemetry-instrumentation's BaseInstrumentor itself checks only ``instrumentation_dependencies()`` (all of them
required, by distribution name); ``instruments-any`` is read from the distribution's metadata by the
``opentelemetry-instrument`` loader (0.57b0 and later). ``instrumentation_dependencies()`` therefore returns
``_instruments`` (empty) and the module check replaces it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import logging
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

# The oldest AG2 classic we test is 0.9.0 (pyautogen==0.9, also what ag2==0.9 and autogen==0.9 install) and
# 0.9.1.post0 (the oldest ag2 that ships its own files); the newest is autogen 0.14.1.
SUPPORTED_AUTOGEN = ">=0.9, <1.0"
"""The ``autogen`` module versions we instrument (``autogen.version.__version__``)."""
SUPPORTED_AG2X = ">=1.0, <2.0"
"""The AG2 1.x versions we instrument (the ``ag2`` module; its ``__version__`` is its distribution's version)."""

_instruments_autogen = "autogen >= 0.9, < 1.0"
_instruments_ag2 = "ag2 >= 0.9, < 2.0"  # classic ag2 0.9 → 0.14 and AG2 1.x (the `ag2` module)
_instruments_pyautogen = "pyautogen >= 0.9, < 0.10"

_instruments: tuple[str, ...] = ()
_instruments_any = (_instruments_autogen, _instruments_ag2, _instruments_pyautogen)

# distributions worth naming when AG2 classic is missing or unsupported: what the user may think is AG2
_RELATED = ("autogen", "ag2", "pyautogen", "autogen-agentchat")

INSTALL_HINT = "pip install autogen (AG2 classic, or ag2<1.0 / pyautogen 0.9 that you may already have)"

logger = logging.getLogger("ag2_otel")


@dataclass(frozen=True)
class Ag2Support:
    """What provides ``autogen`` here and whether ag2-otel instruments it."""

    module_version: str | None  # the autogen module's __version__; None: no autogen module (or no version in it)
    module_found: bool
    distributions: dict[str, str] = field(default_factory=dict)  # related distributions installed: name -> version

    @property
    def supported(self) -> bool:
        return self.module_found and is_supported_version(self.module_version)

    def installed(self) -> str:
        """The related distributions, each with what it is when that is not AG2 classic."""
        parts = [f"{name} {version}{_what(name, version)}" for name, version in self.distributions.items()]
        return ", ".join(parts) if parts else "none of autogen, ag2, pyautogen"

    def message(self) -> str:
        if self.supported:
            return f"ag2-otel: AG2 classic {self.module_version} (installed: {self.installed()})"
        if not self.module_found:
            found = "AG2 classic is not installed (no `autogen` module)"
        elif self.module_version is None:
            found = "the installed `autogen` module has no version (not AG2 classic)"
        else:
            found = f"the installed `autogen` module is version {self.module_version}"
        return (f"ag2-otel: {found}; installed: {self.installed()}. ag2-otel instruments AG2 classic, the `autogen` "
                f"module {SUPPORTED_AUTOGEN} ({INSTALL_HINT}), and AG2 1.x, the `ag2` module {SUPPORTED_AG2X}. AG2 is "
                f"not traced; the application runs unchanged.")


def _what(name: str, version: str) -> str:
    try:
        v = Version(version)
    except InvalidVersion:
        return ""
    if name == "ag2" and v >= Version("1.0"):
        return " (AG2 1.x: a different framework, imported as `ag2`, no `autogen` module)"
    if name == "pyautogen" and v >= Version("0.10"):
        return " (a proxy for Microsoft's autogen-agentchat, not AG2)"
    if name == "pyautogen" and v < Version("0.3"):
        return " (Microsoft's AutoGen 0.2, not AG2)"
    if name == "autogen-agentchat":
        return " (Microsoft's AutoGen 0.4+, not AG2)"
    return ""


def is_supported_version(version: str | None) -> bool:
    """True for an ``autogen`` module version we instrument (pre- and post-releases included)."""
    if not version:
        return False
    try:
        return SpecifierSet(SUPPORTED_AUTOGEN).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def _installed_distributions() -> dict[str, str]:
    found = {}
    for name in _RELATED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        except Exception:  # noqa: BLE001 - a broken metadata directory must not break the check
            continue
    return found


def _version_from_source(locations) -> str | None:
    """``__version__`` from ``autogen/version.py`` without importing ``autogen`` (an unsupported one may not import)."""
    for location in locations or ():
        path = Path(location) / "version.py"
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in tree.body:
            if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets)
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                return node.value.value
    return None


def autogen_module_version() -> tuple[bool, str | None]:
    """(is there an ``autogen`` module, its ``__version__``): the module itself decides, not a distribution name."""
    module = sys.modules.get("autogen")
    if module is not None:
        version = getattr(module, "__version__", None) or getattr(sys.modules.get("autogen.version"), "__version__",
                                                                  None)
        if version is None:
            version = _version_from_source(getattr(module, "__path__", None))
        return True, str(version) if version is not None else None
    try:
        spec = importlib.util.find_spec("autogen")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return False, None
    version = _version_from_source(spec.submodule_search_locations)
    if version is None and spec.origin:  # no version.py beside __init__: ask the module
        try:
            version = getattr(importlib.import_module("autogen"), "__version__", None)
        except Exception:  # noqa: BLE001 - an autogen that does not import is not one we can instrument
            version = None
    return True, version


def check_ag2() -> Ag2Support:
    """Is AG2 classic here, at a supported version? Never raises."""
    try:
        found, version = autogen_module_version()
        return Ag2Support(module_version=version, module_found=found, distributions=_installed_distributions())
    except Exception:  # noqa: BLE001 - the check must never break the host application
        logger.debug("ag2-otel: could not check the autogen module", exc_info=True)
        return Ag2Support(module_version=None, module_found=False)


def ag2x_version() -> str | None:
    """The version of AG2 1.x when its ``ag2`` module is importable here and in range, else None. Never raises.

    Classic ``ag2`` distributions (0.9 → 0.14) install the ``autogen`` module only, so an ``ag2`` module is 1.x; its
    own ``__version__`` is read from the distribution's metadata, which is what is read here (without importing it).
    """
    try:
        if importlib.util.find_spec("ag2") is None:
            return None
        version = importlib.metadata.version("ag2")
        return version if SpecifierSet(SUPPORTED_AG2X).contains(Version(version), prereleases=True) else None
    except Exception:  # noqa: BLE001 - no metadata, a broken install, an odd version: not one we trace
        return None


_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_unsupported(support: Ag2Support) -> None:
    """The one warning for a missing or unsupported AG2 (once per process and message)."""
    text = support.message()
    with _warned_lock:
        if text in _warned:
            return
        _warned.add(text)
    logger.warning(text)
