"""Suite files (``suites/*.toml``): what to measure. Loading and strict validation.

:func:`load_suite` reads a TOML file (tomllib) and returns a frozen :class:`Suite`. It is
strict: an unknown key, an empty or inverted range, a value outside its family's domain,
a candidate pattern that matches nothing, an unknown dtype/device/mode, a missing file or
a TOML syntax error raise :class:`~ztbench.io.errors.UserError` with ONE line naming the
file, the key path and the problem, e.g.
``suites/x.toml: families.ztnb.grid.mu: range [1e9, 1e-30] is inverted``.

Schema (every key below; anything else is an error)::

    name = "quick"                  # optional, default: the file stem
    description = "CI gate"         # optional
    base = "default.toml"           # optional: inherit every top-level key not set here
                                    #   (except name/description) from that suite file,
                                    #   path relative to this file
    seed = 20240611                 # int >= 0, default 0: random samples and nothing else
    dtypes = ["float64", "float32"] # required: float64, float32, bfloat16, float16
    devices = ["cpu"]               # default ["cpu"]; cpu, cuda
    modes = ["eager", "compile"]    # default ["eager"]; eager, compile (torch.compile)

    [candidates]                    # required
    include = ["ztpoisson/*", "ztnb/*"]  # required: candidate ids or fnmatch globs
    exclude = ["*/r-actuar"]        # optional: ids or globs (each must match a candidate)
    kinds = ["torch"]               # optional: keep only these kinds (torch, peer)
    [candidates.modes]              # optional: restrict a mode to some candidates
    compile = ["*/naive", "*/stable"]    #   (modes not listed here: every candidate)
    [[candidates.external]]         # optional, repeatable: the user's own formulation
    id = "mylab/ztnb"               #   (schema: ztbench/candidates/external.py); every
    target = "losses.py:ztnb_nll"   #   declared one is measured, `include` is then optional
    family = "ztnb"
    form = "loss"

    [thresholds]                    # optional: threshold sweeps, candidate id -> t values
    "ztpoisson/threshold" = [5.0, 10.0, 20.0]          # explicit values, or
    "ztnb/threshold-w" = { min = 1.0, max = 50.0, num = 25, spacing = "log",
                           values = [15.0] }           # a range (+ extra values)

    [families.ztpoisson]            # the points of a family (at least one family)
    # Grids: a table, or an array of tables [[families.ztpoisson.grid]]: the cartesian
    # product of one spec per column. A column spec is a range {min, max, num} (log-spaced;
    # for k: log-spaced integers, deduplicated, so at most num) or an explicit list. The
    # mean parameter may instead be given relative to k: lam_over_k (ztpoisson) or
    # mu_over_k (ztnb), a positive range or list; the mean is then k * ratio, and points
    # that fall outside the domain are dropped.
    grid = { k = { min = 1, max = 1e7, num = 8 }, lam = { min = 1e-30, max = 1e9, num = 40 } }
    # Random samples: n points, each column log-uniform in {min, max} (k: log-uniform
    # integer); a table or an array of tables. Seeded from the suite seed and the family.
    random = { n = 1000, k = { min = 1, max = 1e7 }, lam = { min = 1e-30, max = 1e9 } }
    # Edge points: rows in column order (k, lam) / (k, mu, theta), or inline tables.
    edges = [[1, 1e-30], [1e7, 1e9], { k = 2, lam = 1.0 }]
    # Neighbourhoods of the published thresholds (each count k in the list times):
    #   ztpoisson: lam = t and `ulps` floats either side in EACH suite dtype, plus `decade`
    #     log-spaced points in [t / sqrt(10), t * sqrt(10)];
    #   ztnb: for each mu in sum_mu, theta = t - mu (the coded rule theta + mu = t); for
    #     each mu in product_mu, theta = 1 + t / (mu - 1) (the text rule (mu-1)(theta-1) =
    #     t); for each mu in pair_mu (> 1), theta on the published code's product curve
    #     (mu - 1 + 1e-8)(theta + 1e-8) = t; for each theta in w_theta, mu with
    #     w = theta log1p(mu/theta) = t; each with
    #     `ulps` floats either side (of theta, resp. mu) in each dtype, and `decade`
    #     points along the same curves with t scaled over a decade.
    [families.ztpoisson.near_thresholds]
    k = [1, 2, 10, 1000]            # required
    at = [10.0]                     # default: the published thresholds (10; ztnb: 15)
    ulps = 3                        # default 2
    decade = 9                      # default 9
    # ztnb only: sum_mu, product_mu, pair_mu, w_theta = [...] (default empty)
    # Realistic points from real counts: the (k, mu_cg, theta_g) that the certified
    # reference fit (ztbench.fit) places on a shipped dataset's nonzero counts, for the
    # genes whose fit is interior (status ok); n of them, a uniform subsample of the
    # nonzero cells seeded from the suite seed and the dataset name. model: "per-gene"
    # (default) or "size-factor"; family, if given, must be the table's family.
    dataset = { name = "mouse_brain_10k", family = "ztnb", model = "size-factor", n = 20000 }

    [regions.tiny-mu]               # optional: named regions for per-region summaries
    family = "ztnb"                 # a family, or a list of them (["ztpoisson", "ztnb"])
    mu_max = 1e-6                   # <var>_min / <var>_max, inclusive bounds, >= 1 of them
    description = "..."             # optional
    # variables: ztpoisson: k, lam, mean (= lam), w (= lam), lam_over_k;
    #            ztnb: k, mu, mean (= mu), theta, w (= theta log1p(mu/theta)), mu_over_k,
    #            theta_plus_mu; a region of several families: the variables they share
    [regions.realistic]             # or: the points of a family's dataset source (one
    family = "ztnb"                 #   family; bounds optional on top of it)
    source = "dataset"

    [goals]                         # optional: the shipped loss's goals (report, tests)
    candidates = ["ztpoisson/ztbench", "ztnb/ztbench"]   # required: ids in this suite
    dtypes = ["float64", "float32"] # required: judged in these dtypes (eager, region all)
    value_ulp = 4.0                 # required: max ulp error of the value
    gradient_ulp = 16.0             # required: max ulp error of each gradient
    speed_vs_naive = 1.0            # required: forward+backward element rate / the naive
                                    #   candidate's in the same dtype, CPU eager, same run
    speed = { float64 = { ztpoisson = 0.5, ztnb = 0.3 } }   # optional: per dtype, one
                                    #   goal or a table family -> goal (else speed_vs_naive)

    [impact]                        # optional: what `ztbench bench` refits (impact stage)
    candidates = ["ztnb/published-code", "ztnb/ztbench"]  # default: every candidate
    dtypes = ["float32"]            # default: the suite's dtypes but float64 (or float32)
    synthetic = "9x9"               # default "9x9": mu x theta grid of exact ZTNB samples
                                    #   (false: none)
    training = true                 # default true: train the masked-count model on each
                                    #   dataset source (`ztbench impact --model masked`)

    [gate]                          # optional: tolerances of the regression gate
    max_ratio = 2.0                 # default 2.0 (>= 1)
    min_ulp = 1.0                   # default 1.0 (>= 0)
    failure_slack = 0.02            # default 0.02 (>= 0): a nonzero failure count may
                                    #   grow by this fraction of itself (0 stays 0)
    broken_ratio = 4.0              # default 4.0 (>= 1): the ratio allowed (if above
                                    #   max_ratio) where the baseline is >= 2^(p/2) ulp
                                    #   (half the format's bits wrong)
    [gate.candidates."ztnb/naive"]  # optional per-candidate (id or glob) overrides
    max_ratio = 10.0

Candidate patterns are checked against the candidate registry (or the ``known_ids`` the
caller passes), so a typo fails at load time, not after an hour of benchmarking.

Modules: :mod:`.model` (the validated suite), :mod:`.check` (validation helpers),
:mod:`.load` (reading a file), :mod:`.points` (families and regions).
"""

from __future__ import annotations

from ztbench.suite.load import (
    TOP_KEYS,
    find_suite,
    load_suite,
)
from ztbench.suite.model import (
    PUBLISHED_THRESHOLDS,
    RATIO_KEYS,
    REGION_VARIABLES,
    SUITES_DIR,
    ColumnSpec,
    DatasetSource,
    FamilyPoints,
    Goals,
    GridSpec,
    Impact,
    NearThresholds,
    RandomSpec,
    Range,
    Region,
    Suite,
)

__all__ = [
    "PUBLISHED_THRESHOLDS",
    "RATIO_KEYS",
    "REGION_VARIABLES",
    "SUITES_DIR",
    "TOP_KEYS",
    "ColumnSpec",
    "DatasetSource",
    "FamilyPoints",
    "Goals",
    "GridSpec",
    "Impact",
    "NearThresholds",
    "RandomSpec",
    "Range",
    "Region",
    "Suite",
    "find_suite",
    "load_suite",
]
