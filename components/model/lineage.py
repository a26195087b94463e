"""Which customers a registered model trained on, so it is never scored on them.

The register step stores the training split's customer ids, hashed (SHA-256, first 64
bits: no customer id is written to the registry, and 64 bits make a chance collision among
millions of ids negligible), as `training_customers.npy` in the version's directory, beside
the reference profile. Evaluation reads the champion's file to compare it with a new model
only on test customers it never saw. A plain NumPy array, loaded with pickles refused.
"""

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

TRAINING_CUSTOMERS_FILE = "training_customers.npy"


def hash_ids(ids: Iterable[object]) -> np.ndarray:
    """64-bit hashes of customer ids (as text), one per id, in order."""
    return np.array(
        [int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:8], "little") for i in ids],
        dtype=np.uint64,
    )


def save_training_customers(ids: Iterable[object], directory: Path) -> Path:
    """Store the hashed ids of the customers a model trained on in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / TRAINING_CUSTOMERS_FILE
    np.save(path, np.unique(hash_ids(ids)), allow_pickle=False)
    return path


def load_training_customers(directory: Path) -> np.ndarray | None:
    """The hashed training customers stored in `directory`, or None for a version
    registered before they were kept."""
    from components.errors import RegistryError

    path = directory / TRAINING_CUSTOMERS_FILE
    if not path.is_file():
        return None
    try:
        hashes = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # not a NumPy file, cut short, or pickled objects
        hashes = None
    if not isinstance(hashes, np.ndarray) or hashes.dtype != np.uint64 or hashes.ndim != 1:
        found = "unreadable" if hashes is None else f"{hashes.ndim}-D {hashes.dtype} values"
        raise RegistryError(
            f"{path}: holds {found}, expected a list of 64-bit customer id hashes: the "
            "hashed-customers file is damaged; re-run training to register a new model"
        )
    return hashes


def trained_on(ids: Iterable[object], training_customers: np.ndarray) -> np.ndarray:
    """True for each id among the hashed `training_customers`."""
    return np.isin(hash_ids(ids), training_customers)
