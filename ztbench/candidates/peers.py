"""Peer formulations from other libraries: numpy float64 in, float64 out, CPU, no autograd.

Each returns the **full** NLL, -log P(k | k >= 1), as the libraries compute log-pmfs.
Peers are measured as users would call them: parameters are converted to the library's
parameterisation (NB: size = theta, prob = theta / (theta + mu)) in float64, so rounding
in that conversion is charged to the peer.

A peer that cannot run here (R or actuar missing, Rscript failing) raises
:class:`~ztbench.candidates.base.Unsupported`, which the runner records.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from ztbench.candidates.base import DTYPES_PEER, Candidate, Unsupported, register

R_TIMEOUT_S = 600


def _f64(*arrays: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(a, dtype=np.float64) for a in arrays]


# --- statsmodels -------------------------------------------------------------------------


def statsmodels_ztpoisson(k: np.ndarray, lam: np.ndarray, threshold: float | None = None):
    """-statsmodels truncatedpoisson.logpmf(k, lam, truncation=0)."""
    from statsmodels.distributions.discrete import truncatedpoisson

    k, lam = _f64(k, lam)
    with np.errstate(all="ignore"):
        return -np.asarray(truncatedpoisson.logpmf(k, lam, 0), dtype=np.float64)


def statsmodels_ztnb(k: np.ndarray, mu: np.ndarray, theta: np.ndarray, threshold=None):
    """-statsmodels truncatednegbin.logpmf(k, mu, alpha = 1/theta, p = 2, truncation=0)."""
    from statsmodels.distributions.discrete import truncatednegbin

    k, mu, theta = _f64(k, mu, theta)
    with np.errstate(all="ignore"):
        return -np.asarray(truncatednegbin.logpmf(k, mu, 1.0 / theta, 2, 0), dtype=np.float64)


# --- SciPy -------------------------------------------------------------------------------


def scipy_ztpoisson(k: np.ndarray, lam: np.ndarray, threshold: float | None = None):
    """-(poisson.logpmf(k, lam) - poisson.logsf(0, lam))."""
    from scipy.stats import poisson

    k, lam = _f64(k, lam)
    with np.errstate(all="ignore"):
        return -(poisson.logpmf(k, lam) - poisson.logsf(0, lam))


def scipy_ztnb(k: np.ndarray, mu: np.ndarray, theta: np.ndarray, threshold=None):
    """-(nbinom.logpmf(k, theta, p) - nbinom.logsf(0, theta, p)), p = theta / (theta + mu)."""
    from scipy.stats import nbinom

    k, mu, theta = _f64(k, mu, theta)
    with np.errstate(all="ignore"):
        p = theta / (theta + mu)
        return -(nbinom.logpmf(k, theta, p) - nbinom.logsf(0, theta, p))


# --- R actuar ----------------------------------------------------------------------------

# Points travel as raw little-endian float64 (readBin/writeBin): exact both ways, unlike
# decimal text, which R's own strtod does not always round correctly.
_R_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
fam <- args[1]; n <- as.integer(args[2]); ncol <- as.integer(args[3])
suppressPackageStartupMessages(library(actuar))
con <- file(args[4], "rb")
x <- readBin(con, "double", n = n * ncol, size = 8, endian = "little")
close(con)
m <- matrix(x, nrow = n, ncol = ncol)
v <- suppressWarnings(if (fam == "ztpoisson") {
  dztpois(m[, 1], lambda = m[, 2], log = TRUE)
} else {
  dztnbinom(m[, 1], size = m[, 3], prob = m[, 3] / (m[, 3] + m[, 2]), log = TRUE)
})
con <- file(args[5], "wb")
writeBin(as.double(v), con, size = 8, endian = "little")
close(con)
"""


@lru_cache(maxsize=1)
def r_actuar_status() -> tuple[bool, str]:
    """(available, reason): whether Rscript runs and loads actuar here."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return False, "Rscript not found (install r-base-core and r-cran-actuar)"
    try:
        proc = subprocess.run(
            [rscript, "-e", "suppressPackageStartupMessages(library(actuar))"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"Rscript does not run: {exc}"
    if proc.returncode != 0:
        return False, "R package actuar not installed (Debian: r-cran-actuar)"
    return True, "ok"


def _r_actuar(family: str, columns: list[np.ndarray]) -> np.ndarray:
    ok, reason = r_actuar_status()
    if not ok:
        raise Unsupported(reason)
    n = len(columns[0])
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    block = np.concatenate([c.astype("<f8") for c in columns])  # column-major for R
    with tempfile.TemporaryDirectory(prefix="ztbench-r-") as tmp:
        src, inp, out = (Path(tmp) / name for name in ("run.R", "in.bin", "out.bin"))
        src.write_text(_R_SCRIPT)
        block.tofile(inp)
        cmd = ["Rscript", "--vanilla", str(src), family, str(n), str(len(columns)), str(inp)]
        try:
            proc = subprocess.run(
                [*cmd, str(out)],
                capture_output=True,
                text=True,
                timeout=R_TIMEOUT_S,
                env={**os.environ, "LC_ALL": "C"},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unsupported(f"Rscript failed: {exc}") from None
        if proc.returncode != 0 or not out.exists():
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise Unsupported(f"Rscript failed (exit {proc.returncode}): {last}")
        value = np.fromfile(out, dtype="<f8")
    if value.shape != (n,):
        raise Unsupported(f"Rscript returned {value.shape[0]} values for {n} points")
    return -value.astype(np.float64)


def r_actuar_ztpoisson(k: np.ndarray, lam: np.ndarray, threshold: float | None = None):
    """-actuar::dztpois(k, lambda, log = TRUE), one Rscript process per call."""
    return _r_actuar("ztpoisson", _f64(k, lam))


def r_actuar_ztnb(k: np.ndarray, mu: np.ndarray, theta: np.ndarray, threshold=None):
    """-actuar::dztnbinom(k, size = theta, prob = theta/(theta+mu), log = TRUE) (in R)."""
    return _r_actuar("ztnb", _f64(k, mu, theta))


def _peer(cid: str, fn, description: str, provenance: str) -> Candidate:
    family = cid.split("/", 1)[0]
    return register(
        Candidate(
            id=cid,
            family=family,
            form="full",
            description=description,
            provenance=provenance,
            kind="peer",
            dtypes=DTYPES_PEER,
            fn=fn,
        )
    )


_peer(
    "ztpoisson/statsmodels",
    statsmodels_ztpoisson,
    "-truncatedpoisson.logpmf(k, lam, 0): Poisson logpmf minus log(1 - pmf(0)).",
    "statsmodels.distributions.discrete.truncatedpoisson",
)
_peer(
    "ztpoisson/scipy",
    scipy_ztpoisson,
    "-(poisson.logpmf(k, lam) - poisson.logsf(0, lam)).",
    "scipy.stats.poisson",
)
_peer(
    "ztpoisson/r-actuar",
    r_actuar_ztpoisson,
    "-dztpois(k, lam, log = TRUE) computed by R in one Rscript process per batch.",
    "R package actuar (dztpois), Debian r-cran-actuar",
)
_peer(
    "ztnb/statsmodels",
    statsmodels_ztnb,
    "-truncatednegbin.logpmf(k, mu, 1/theta, 2, 0): NB2 logpmf minus log(1 - pmf(0)).",
    "statsmodels.distributions.discrete.truncatednegbin",
)
_peer(
    "ztnb/scipy",
    scipy_ztnb,
    "-(nbinom.logpmf(k, theta, p) - nbinom.logsf(0, theta, p)), p = theta/(theta+mu).",
    "scipy.stats.nbinom",
)
_peer(
    "ztnb/r-actuar",
    r_actuar_ztnb,
    "-dztnbinom(k, theta, theta/(theta+mu), log = TRUE) computed by R in one Rscript "
    "process per batch.",
    "R package actuar (dztnbinom), Debian r-cran-actuar",
)
