"""Finding the control plane's binaries, and the errors every sandbox/controlplane*.py module raises.

``make control-plane`` builds kube-apiserver and kube-controller-manager into
``.tools/kubernetes/bin`` and installs Debian's etcd; this module only locates them (and says how
to get them when they are missing). The errors live here, at the bottom of the controlplane
modules, so that the certificates, the process lifecycle and the admin calls can all raise them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class ControlPlaneNotInstalled(RuntimeError):
    """kube-apiserver, kube-controller-manager or etcd is missing (run `make control-plane`)."""


class ControlPlaneError(RuntimeError):
    """A process of the control plane exited or did not become ready in time."""


def find_binaries(bin_dir: Path | str | None) -> dict[str, str]:
    """Absolute paths of the three binaries: from ``bin_dir`` first, else PATH (/usr/bin/etcd
    is Debian's etcd-server)."""
    found: dict[str, str] = {}
    directory = Path(bin_dir) if bin_dir else None
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        candidates = [directory / name] if directory else []
        which = shutil.which(name)
        candidates += [Path(which)] if which else []
        if name == "etcd":
            candidates.append(Path("/usr/bin/etcd"))
        path = next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)
        if path is None:
            where = f" in {directory}" if directory else " on PATH"
            raise ControlPlaneNotInstalled(f"{name} not found{where}; run `make control-plane`")
        found[name] = str(path.resolve())
    return found
