"""Suite files: every kind of bad file is one UserError naming the file and the key;
the shipped suites load."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from ztbench import candidates
from ztbench.io.errors import UserError
from ztbench.suite import REGION_VARIABLES, SUITES_DIR, Suite, find_suite, load_suite

KNOWN = [
    SimpleNamespace(id="ztpoisson/naive", kind="torch", threshold=None),
    SimpleNamespace(id="ztpoisson/stable", kind="torch", threshold=None),
    SimpleNamespace(id="ztpoisson/threshold", kind="torch", threshold=10.0),
    SimpleNamespace(id="ztpoisson/scipy", kind="peer", threshold=None),
    SimpleNamespace(id="ztnb/naive", kind="torch", threshold=None),
    SimpleNamespace(id="ztnb/stable", kind="torch", threshold=None),
    SimpleNamespace(id="ztnb/threshold-sum", kind="torch", threshold=15.0),
    SimpleNamespace(id="ztnb/scipy", kind="peer", threshold=None),
]

GOOD = """\
seed = 7
dtypes = ["float64", "float32"]
devices = ["cpu"]
modes = ["eager", "compile"]

[candidates]
include = ["ztpoisson/*", "ztnb/*"]
exclude = ["ztnb/scipy"]
kinds = ["torch", "peer"]
[candidates.modes]
compile = ["*/stable"]

[thresholds]
"ztpoisson/threshold" = [5.0, 10.0, 10.0]
"ztnb/threshold-sum" = { min = 1.0, max = 100.0, num = 3, values = [15.0] }

[families.ztpoisson]
edges = [[1, 1e-30], { k = 2, lam = 3.0 }]
grid = { k = { min = 1, max = 100, num = 3 }, lam = { min = 1e-30, max = 1e9, num = 4 } }

[families.ztnb]
[[families.ztnb.grid]]
k = [1, 2]
mu = { min = 1e-30, max = 1e9, num = 3 }
theta = { min = 1e-12, max = 1e10, num = 3 }
[[families.ztnb.random]]
n = 10
k = { min = 1, max = 10000000 }
mu_over_k = { min = 0.5, max = 2.0 }
theta = { min = 1e-12, max = 1e10 }
[families.ztnb.near_thresholds]
k = [1]
sum_mu = [1.0]

[regions.tiny-mu]
family = "ztnb"
mu_max = 1e-6

[gate]
max_ratio = 3.0
[gate.candidates."ztnb/*"]
min_ulp = 4.0
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def load(tmp_path: Path, text: str) -> Suite:
    return load_suite(write(tmp_path, text), KNOWN)


def test_good_suite(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    s = load_suite(p, KNOWN)
    assert s.name == "s" and s.seed == 7 and s.path == p
    assert s.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert s.candidates == (
        "ztpoisson/naive",
        "ztpoisson/stable",
        "ztpoisson/threshold",
        "ztpoisson/scipy",
        "ztnb/naive",
        "ztnb/stable",
        "ztnb/threshold-sum",
    )
    assert s.modes_for("ztnb/stable") == ("eager", "compile")
    assert s.modes_for("ztnb/naive") == ("eager",)
    assert s.modes_for("ztnb/scipy") == ()
    assert s.candidates_of("ztnb") == ("ztnb/naive", "ztnb/stable", "ztnb/threshold-sum")
    assert s.thresholds["ztpoisson/threshold"] == (5.0, 10.0)
    assert s.thresholds["ztnb/threshold-sum"] == (1.0, 10.0, 15.0, 100.0)
    assert s.regions["tiny-mu"].bounds == {"mu": (float("-inf"), 1e-6)}
    assert s.gate.for_candidate("ztpoisson/naive").max_ratio == 3.0
    assert s.gate.for_candidate("ztpoisson/naive").min_ulp == 1.0
    assert s.gate.for_candidate("ztnb/naive").min_ulp == 4.0
    assert s.gate.for_candidate("ztnb/naive").max_ratio == 3.0
    assert s.families["ztpoisson"].edges == ((1.0, 1e-30), (2.0, 3.0))
    assert s.families["ztnb"].near_thresholds.at == (15.0,)


def test_kinds_filter_and_plain_ids(tmp_path: Path) -> None:
    s = load(tmp_path, GOOD.replace('kinds = ["torch", "peer"]', 'kinds = ["torch"]'))
    assert "ztpoisson/scipy" not in s.candidates
    ids = {c.id: c.kind for c in KNOWN}
    s2 = load_suite(write(tmp_path, GOOD.replace('"torch", "peer"', '"torch"')), ids)
    assert s2.candidates == s.candidates
    assert load_suite(write(tmp_path, GOOD.replace("kinds = ", "# ")), list(ids)).candidates


# (replacement of a line of GOOD, or text appended, expected key path, expected problem)
BAD = [
    ("seed = 7", "seed = 7\nsede = 1", "sede: unknown key"),
    ("[gate]", "[gate]\nmax_ration = 1", "gate.max_ration: unknown key"),
    ("n = 10", "n = 10\nlam = { min = 1, max = 2 }", "families.ztnb.random[0].lam: unknown key"),
    (
        "mu = { min = 1e-30, max = 1e9, num = 3 }",
        "mu = { min = 1e9, max = 1e-30, num = 3 }",
        "families.ztnb.grid[0].mu: range [1e9, 1e-30] is inverted",
    ),
    (
        "mu = { min = 1e-30, max = 1e9, num = 3 }",
        "mu = { min = 1e-30, max = 1e9, num = 0 }",
        "families.ztnb.grid[0].mu: range [1e-30, 1e9] is empty",
    ),
    ("k = [1, 2]", "k = []", "families.ztnb.grid[0].k: is empty"),
    (
        "theta = { min = 1e-12, max = 1e10, num = 3 }",
        "theta = { min = 1e-13, max = 1e10, num = 3 }",
        "families.ztnb.grid[0].theta: range [1e-13, 1e10] is outside the domain",
    ),
    ("k = [1, 2]", "k = [0, 2]", "families.ztnb.grid[0].k: k = 0 is outside the domain"),
    ("k = [1, 2]", "k = [1.5]", "families.ztnb.grid[0].k: k = 1.5 is not an integer"),
    (
        "edges = [[1, 1e-30], { k = 2, lam = 3.0 }]",
        "edges = [[1, 1e-31]]",
        "families.ztpoisson.edges[0]: lam = 1e-31 is outside the domain",
    ),
    (
        "edges = [[1, 1e-30], { k = 2, lam = 3.0 }]",
        "edges = [[1, 2, 3]]",
        "families.ztpoisson.edges[0]: has 3 values",
    ),
    ('exclude = ["ztnb/scipy"]', 'exclude = ["ztnb/nope"]', "candidates.exclude: pattern"),
    (
        'include = ["ztpoisson/*", "ztnb/*"]',
        'include = ["ztpoisson/*", "ztnb/naïve"]',
        "candidates.include: pattern 'ztnb/naïve' matches no candidate",
    ),
    ('compile = ["*/stable"]', 'compile = ["*/scipy-x"]', "candidates.modes.compile: pattern"),
    ('modes = ["eager", "compile"]', 'modes = ["eager"]', "candidates.modes.compile: mode"),
    ('modes = ["eager", "compile"]', 'modes = ["eager", "jit"]', "modes: unknown mode 'jit'"),
    ('dtypes = ["float64", "float32"]', 'dtypes = ["float64", "f32"]', "dtypes: unknown dtype"),
    ('devices = ["cpu"]', 'devices = ["tpu"]', "devices: unknown device 'tpu'"),
    (
        '"ztpoisson/threshold" = [5.0, 10.0, 10.0]',
        '"ztpoisson/stable" = [5.0]',
        'thresholds."ztpoisson/stable": ztpoisson/stable is not a threshold family',
    ),
    (
        '"ztpoisson/threshold" = [5.0, 10.0, 10.0]',
        '"ztpoisson/thresh" = [5.0]',
        'thresholds."ztpoisson/thresh": unknown key',
    ),
    (
        '"ztpoisson/threshold" = [5.0, 10.0, 10.0]',
        '"ztpoisson/threshold" = [-1.0]',
        'thresholds."ztpoisson/threshold": threshold -1 must be positive',
    ),
    ("mu_max = 1e-6", "mu_min = 1.0\nmu_max = 1e-6", "regions.tiny-mu.mu_max: mu range"),
    ("mu_max = 1e-6", "lam_max = 1e-6", "regions.tiny-mu.lam_max: unknown key"),
    ('family = "ztnb"', 'family = "ztp"', "regions.tiny-mu.family: unknown family 'ztp'"),
    ("max_ratio = 3.0", "max_ratio = 0.5", "gate.max_ratio: must be >= 1"),
    ('[gate.candidates."ztnb/*"]', '[gate.candidates."zz/*"]', 'gate.candidates."zz/*": pattern'),
    ("sum_mu = [1.0]", "sum_mu = [20.0]", "families.ztnb.near_thresholds.sum_mu: mu = 20"),
    ("seed = 7", 'seed = "7"', "seed: must be an integer"),
    ('dtypes = ["float64", "float32"]', "", "dtypes: missing required key"),
]


@pytest.mark.parametrize(("old", "new", "expected"), BAD, ids=[b[2][:40] for b in BAD])
def test_bad_suite(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    p = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(UserError) as exc:
        load_suite(p, KNOWN)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{p}: "), msg
    assert expected in msg, msg


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD + "\n[gate\n")
    with pytest.raises(UserError, match=r"s\.toml: TOML syntax error: .*line") as exc:
        load_suite(p, KNOWN)
    assert "\n" not in str(exc.value)
    p = write(tmp_path, GOOD.replace("seed = 7", "seed = 7\nseed = 8"))
    with pytest.raises(UserError, match="TOML syntax error"):
        load_suite(p, KNOWN)
    missing = tmp_path / "nope.toml"
    with pytest.raises(UserError, match=r"nope\.toml: no such file"):
        load_suite(missing, KNOWN)


def test_candidate_family_without_points(tmp_path: Path) -> None:
    text = """\
dtypes = ["float64"]
[candidates]
include = ["ztpoisson/naive", "ztnb/naive"]
[families.ztpoisson]
edges = [[1, 1.0]]
"""
    with pytest.raises(UserError, match=r"candidates: ztnb/naive needs points of family ztnb"):
        load(tmp_path, text)
    s = load(tmp_path, text.replace(', "ztnb/naive"', ""))
    assert s.families.keys() == {"ztpoisson"} and s.candidates == ("ztpoisson/naive",)
    assert s.modes == ("eager",) and s.devices == ("cpu",) and s.seed == 0


def test_base_suite_inherits(tmp_path: Path) -> None:
    base = write(tmp_path, GOOD, "base.toml")
    child = write(
        tmp_path,
        'base = "base.toml"\ndtypes = ["float16"]\ndevices = ["cuda"]\n',
        "child.toml",
    )
    s = load_suite(child, KNOWN)
    b = load_suite(base, KNOWN)
    assert s.name == "child" and s.dtypes == ("float16",) and s.devices == ("cuda",)
    assert s.families == b.families and s.candidates == b.candidates and s.seed == 7
    assert s.sha256 != b.sha256
    write(tmp_path, 'base = "child.toml"\n' + GOOD, "base.toml")
    with pytest.raises(UserError, match="cycle"):
        load_suite(child, KNOWN)


def test_bad_value_in_child_names_child(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "base.toml")
    child = write(tmp_path, 'base = "base.toml"\ndtypes = ["float8"]\n', "child.toml")
    with pytest.raises(UserError, match=r"child\.toml: dtypes: unknown dtype 'float8'"):
        load_suite(child, KNOWN)


@pytest.mark.parametrize("name", ["quick", "default", "full", "cuda"])
def test_shipped_suites_load(name: str) -> None:
    s = candidates.load_suite(find_suite(name))  # against the real candidate registry
    assert s.path == SUITES_DIR / f"{name}.toml"
    assert set(s.families) == {"ztpoisson", "ztnb"}
    assert s.regions and s.thresholds
    for r in s.regions.values():
        assert set(r.bounds) <= set(REGION_VARIABLES[r.family])


def test_shipped_suites_content() -> None:
    names = ("quick", "default", "full", "cuda")
    quick, default, full, cuda = (candidates.load_suite(find_suite(n)) for n in names)
    torch_ids = tuple(c.id for c in candidates.list_candidates() if c.kind == "torch")
    assert quick.candidates == torch_ids
    assert quick.dtypes == ("float64", "float32") and quick.modes == ("eager",)
    assert quick.devices == ("cpu",)
    assert default.candidates == tuple(c.id for c in candidates.list_candidates())
    assert default.dtypes == ("float64", "float32", "bfloat16")
    compiled = {c for c in default.candidates if "compile" in default.modes_for(c)}
    # the naive formulas, ztpoisson/stable and the shipped loss (timed against its eager mode)
    assert compiled == {"ztpoisson/naive", "ztpoisson/stable", "ztnb/naive", "ztpoisson/ztbench",
                        "ztnb/ztbench"}
    assert all("eager" in default.modes_for(c) for c in default.candidates)
    # the full suite: the default's coverage with more points, ztnb/stable compiled too
    assert (full.candidates, full.dtypes) == (default.candidates, default.dtypes)
    assert set(full.regions) == set(default.regions) and full.goals == default.goals
    compiled_full = {c for c in full.candidates if "compile" in full.modes_for(c)}
    assert compiled_full == compiled | {"ztnb/stable"}
    assert default.impact.fit_dtypes(default.dtypes) == ("float32",)
    # the full suite refits every torch candidate but the threshold sweeps' rules, in float32
    assert full.impact.fit_dtypes(full.dtypes) == ("float32",)
    refit = {c for f in ("ztpoisson", "ztnb") for c in full.impact_candidates(f)}
    torch_ids = {c.id for c in candidates.list_candidates() if c.kind == "torch"}
    sweeps = {c.id for c in candidates.list_candidates() if c.threshold is not None}
    assert torch_ids - sweeps <= refit and not refit & sweeps
    assert cuda.devices == ("cuda",) and "float16" in cuda.dtypes
    assert cuda.families == default.families
    threshold_ids = {c.id for c in candidates.list_candidates() if c.threshold is not None}
    assert set(default.thresholds) == threshold_ids
    assert set(quick.thresholds) == threshold_ids


def test_find_suite() -> None:
    assert find_suite("quick") == SUITES_DIR / "quick.toml"
    assert find_suite("x/y.toml") == Path("x/y.toml")


GOALS = """
[goals]
candidates = ["ztnb/stable"]
dtypes = ["float64"]
value_ulp = 4.0
gradient_ulp = 16.0
speed_vs_naive = 0.8
"""


def test_goals_table(tmp_path: Path) -> None:
    s = load(tmp_path, GOOD + GOALS)
    assert s.goals is not None
    assert s.goals.candidates == ("ztnb/stable",) and s.goals.dtypes == ("float64",)
    assert (s.goals.value_ulp, s.goals.gradient_ulp, s.goals.speed_vs_naive) == (4, 16, 0.8)
    assert load(tmp_path, GOOD).goals is None


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('candidates = ["ztnb/stable"]', 'candidates = ["ztnb/nope"]', "goals.candidates: unknown"),
        ("value_ulp = 4.0", "value_ulp = -1.0", "goals.value_ulp: must be > 0"),
        ("speed_vs_naive = 0.8\n", "", "goals.speed_vs_naive: missing required key"),
        ('dtypes = ["float64"]', 'dtypes = ["float128"]', "goals.dtypes: unknown dtype"),
        ("speed_vs_naive = 0.8\n", "speed_vs_naive = 0.8\nspeed = { float16x = 1.0 }\n",
         "goals.speed.float16x: unknown key"),
        ("speed_vs_naive = 0.8\n", "speed_vs_naive = 0.8\nspeed = { float64 = { ztp = 1 } }\n",
         "goals.speed.float64.ztp: unknown key"),
        ("speed_vs_naive = 0.8\n", "speed_vs_naive = 0.8\nspeed = { float64 = 0 }\n",
         "goals.speed.float64: must be > 0"),
    ],
)
def test_bad_goals(tmp_path: Path, old: str, new: str, expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        load(tmp_path, GOOD + GOALS.replace(old, new))


IMPACT = """
[impact]
candidates = ["*/stable"]
dtypes = ["bfloat16"]
synthetic = "3x2"
"""


def test_impact_table(tmp_path: Path) -> None:
    s = load(tmp_path, GOOD + IMPACT)
    assert s.impact.candidates == ("*/stable",) and s.impact.synthetic == (3, 2)
    assert s.impact.fit_dtypes(s.dtypes) == ("bfloat16",)
    plain = load(tmp_path, GOOD).impact  # the defaults: every candidate, the suite's dtypes
    assert plain.candidates is None and plain.synthetic == (9, 9)
    assert plain.fit_dtypes(s.dtypes) == ("float32",)  # float64 is not a training dtype
    assert load(tmp_path, GOOD + IMPACT.replace('"3x2"', "false")).impact.synthetic is None
    no_training = load(tmp_path, GOOD + IMPACT + "training = false\n").impact
    assert plain.training and not no_training.training


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('["*/stable"]', '["*/nope"]', "impact.candidates: pattern '\\*/nope' matches no"),
        ('["bfloat16"]', '["float8"]', "impact.dtypes: unknown dtype 'float8'"),
        ('"3x2"', '"3by2"', "impact.synthetic: expected MxT such as 9x9, got '3by2'"),
        ('"3x2"', '"0x2"', "impact.synthetic: sizes must be >= 1"),
        ('synthetic = "3x2"', "genes = 3", "impact.genes: unknown key"),
        ('synthetic = "3x2"', 'training = "yes"', "impact.training: must be true or false"),
    ],
)
def test_bad_impact(tmp_path: Path, old: str, new: str, expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        load(tmp_path, GOOD + IMPACT.replace(old, new))


def test_speed_goals_per_dtype_and_family(tmp_path: Path) -> None:
    speed = 'speed = { float64 = { ztpoisson = 0.5, ztnb = 0.3 }, bfloat16 = 2.0 }\n'
    g = load(tmp_path, GOOD + GOALS.replace("speed_vs_naive = 0.8", "speed_vs_naive = 1.0")
             + speed).goals  # fmt: skip
    assert g is not None
    assert g.speed_goal("ztnb", "float64") == 0.3
    assert g.speed_goal("ztpoisson", "float64") == 0.5
    assert g.speed_goal("ztpoisson", "float32") == 1.0  # not named: speed_vs_naive
    assert g.speed_goal("ztnb", "bfloat16") == 2.0 == g.speed_goal("ztpoisson", "bfloat16")
