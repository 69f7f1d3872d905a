"""Helpers shared by test modules (imported as ``from _helpers import ...``; tests/ is on sys.path)."""

import pickle

import torch


class Payload:
    """Unpickling this calls ``exec``, which would create ``marker``: what a malicious file does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def write_payload(path, marker, raw: bool = False) -> None:
    """Write ``{"model": Payload(marker)}`` to ``path``: a torch.save zip file, or with ``raw`` a bare pickle."""
    obj = {"model": Payload(str(marker))}
    if raw:
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    else:
        torch.save(obj, path)


# the repository's root, for tests at any depth of tests/ (they mirror the engine's subpackages)
REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
