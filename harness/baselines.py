"""Which architecture each one is compared with: what a wrapper added is measured against what it wraps.

By default every architecture is compared with the global baseline (``convnet``), and ``st(X)`` and
``coordconv(X)`` also with ``X`` (paired by seed, like every comparison); a space's ``baselines:`` names others
(``baselines: {"st(tiny)": [tiny, "coordconv(tiny)"]}``). The report's paired table takes its pairs from here.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from .models.spec import WRAPPER


def wrapped(name: str) -> str | None:
    """``st(X)`` / ``coordconv(X)`` → ``X``; None for a name that is not a wrapper."""
    match = WRAPPER.fullmatch(name.strip())
    return match.group(2).strip() if match else None


def comparisons(architectures: Iterable[str], default: str | None = "convnet",
                named: Mapping[str, str | list[str]] | None = None) -> list[tuple[str, str]]:
    """(architecture, baseline) pairs among ``architectures``, each once, in the architectures' order: the
    space's ``named`` baselines where given, else ``default`` and the wrapped model (when present)."""
    present = list(dict.fromkeys(architectures))
    pairs: list[tuple[str, str]] = []
    for arch in present:
        if named and arch in named:
            bases = [named[arch]] if isinstance(named[arch], str) else list(named[arch])
        else:
            bases = [b for b in (default, wrapped(arch)) if b]
        pairs += [(arch, b) for b in dict.fromkeys(bases) if b in present and b != arch]
    return pairs
