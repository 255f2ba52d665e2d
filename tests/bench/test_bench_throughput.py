"""pytest-benchmark suite: the kernels of ``ztbench throughput`` in pytest-benchmark's format.

Run by hand (``pytest tests/bench --benchmark-enable --benchmark-autosave``), excluded from
``make test``; ``make bench`` does not run it: its throughput stage already writes its
timings as pytest-benchmark JSON. The calls are exactly those of :mod:`ztbench.throughput`
(:func:`~ztbench.throughput.make_call`, the same seeded log-uniform inputs, the same copy
floor), so a regression seen here is one the throughput verb measures. Compare runs by hand
with ``pytest tests/bench --benchmark-enable --benchmark-compare``; results are saved under
``.benchmarks/`` (git-ignored).

Grid: every torch candidate, float32, CPU, 10^6 elements, eager, both passes; the naive and
stable candidates also under torch.compile (compilation happens in an untimed warm-up);
the copy floor of each family and pass. On CUDA (skipped without a GPU): naive and stable
at 10^8 elements, eager and compiled, plus the copy, timed with a synchronize after each
call. ``ZTBENCH_THREADS`` fixes torch's thread count (default: torch's own), recorded in
each benchmark's extra_info.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from ztbench.candidates import list_candidates
from ztbench.candidates.execution import compile_limits
from ztbench.core.schema import MODES, PASSES
from ztbench.throughput.inputs import (
    copy_elements,
    make_call,
    make_copy,
    realistic_inputs,
    timing_inputs,
)

CPU_SIZE = 10**6
CUDA_SIZE = 10**8
DTYPE = "float32"
TORCH_IDS = [c.id for c in list_candidates() if c.kind == "torch"]
COMPILE_IDS = [i for i in TORCH_IDS if i.endswith(("/naive", "/stable", "/ztbench"))]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

_INPUTS: dict[tuple[str, str, int], list[torch.Tensor]] = {}


@pytest.fixture(scope="module", autouse=True)
def _settings() -> Iterator[None]:
    """Fixed thread count and a raised dynamo recompile limit for the whole module."""
    old = torch.get_num_threads()
    threads = int(os.environ.get("ZTBENCH_THREADS", "0")) or old
    torch.set_num_threads(threads)
    with compile_limits():
        yield
    torch.set_num_threads(old)
    _INPUTS.clear()


def _inputs(family: str, device: str, size: int) -> list[torch.Tensor]:
    key = (family, device, size)
    if key not in _INPUTS:
        _INPUTS.clear()  # one input set alive at a time (10^8 elements on CUDA)
        _INPUTS[key] = timing_inputs(family, DTYPE, device, size, seed=0)
    return _INPUTS[key]


def _bench(benchmark: Any, call: Callable[[], Any], device: str, **info: Any) -> None:
    if device.startswith("cuda"):
        inner = call

        def call() -> None:
            inner()
            torch.cuda.synchronize()

    call()  # warm-up: compiles in compile mode; not timed
    call()
    benchmark.group = f"{info['family']} {DTYPE} {device} {info['pass']} {info['size']:.0e}"
    benchmark.extra_info.update(info, dtype=DTYPE, device=device,
                                threads=torch.get_num_threads())  # fmt: skip
    benchmark(call)


def _candidate_case(benchmark: Any, cid: str, device: str, mode: str, pass_: str, size: int):
    from ztbench.candidates import get_candidate

    c = get_candidate(cid)
    call = make_call(c, mode, pass_, _inputs(c.family, device, size))
    _bench(benchmark, call, device, family=c.family, candidate=cid, mode=mode, size=size,
           **{"pass": pass_})  # fmt: skip


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("cid", TORCH_IDS)
def test_cpu_eager(benchmark: Any, cid: str, pass_: str) -> None:
    _candidate_case(benchmark, cid, "cpu", "eager", pass_, CPU_SIZE)


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("cid", COMPILE_IDS)
def test_cpu_compile(benchmark: Any, cid: str, pass_: str) -> None:
    _candidate_case(benchmark, cid, "cpu", "compile", pass_, CPU_SIZE)


def _copy_case(benchmark: Any, family: str, device: str, pass_: str, size: int) -> None:
    call = make_copy(copy_elements(family, pass_, size), DTYPE, device)
    _bench(benchmark, call, device, family=family, candidate=f"{family}/copy", mode="eager",
           size=size, **{"pass": pass_})  # fmt: skip


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
def test_cpu_copy(benchmark: Any, family: str, pass_: str) -> None:
    _copy_case(benchmark, family, "cpu", pass_, CPU_SIZE)


@CUDA
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cid", COMPILE_IDS)
def test_cuda(benchmark: Any, cid: str, mode: str, pass_: str) -> None:
    _candidate_case(benchmark, cid, "cuda", mode, pass_, CUDA_SIZE)


@CUDA
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("family", ["ztpoisson", "ztnb"])
def test_cuda_copy(benchmark: Any, family: str, pass_: str) -> None:
    _copy_case(benchmark, family, "cuda", pass_, CUDA_SIZE)


# Realistic single-cell-like inputs (not log-uniform over the whole domain:
# ztbench.throughput.inputs.realistic_inputs, as `ztbench throughput --inputs realistic`).
# The shipped loss next to the naive formula and torch.distributions plus the truncation term,
# forward+backward: compare the rows of the group "... realistic" (elements per second =
# size / mean time). The same on the real-data points of the default suite: group
# "... real data".
REALISTIC_IDS = [
    f"{fam}/{name}"
    for fam in ("ztpoisson", "ztnb")
    for name in ("ztbench", "naive", "torch-distributions")
]


def _realistic_inputs(family: str, size: int) -> list[torch.Tensor]:
    key = (f"{family}/realistic", "cpu", size)
    if key not in _INPUTS:
        _INPUTS.clear()
        _INPUTS[key] = realistic_inputs(family, DTYPE, "cpu", size, seed=0)
    return _INPUTS[key]


@pytest.mark.parametrize("cid", REALISTIC_IDS)
def test_cpu_realistic(benchmark: Any, cid: str) -> None:
    _realistic_case(benchmark, cid, "eager")


@pytest.mark.parametrize("cid", [i for i in REALISTIC_IDS if i in COMPILE_IDS])
def test_cpu_realistic_compile(benchmark: Any, cid: str) -> None:
    """The compiled loss and naive formula on the realistic inputs (compare with the
    eager rows of test_cpu_realistic: group "... realistic compile")."""
    _realistic_case(benchmark, cid, "compile")


def _realistic_case(benchmark: Any, cid: str, mode: str) -> None:
    from ztbench.candidates import get_candidate

    c = get_candidate(cid)
    pass_ = "forward+backward"
    call = make_call(c, mode, pass_, _realistic_inputs(c.family, CPU_SIZE))
    group = f"{c.family} realistic" + (" compile" if mode == "compile" else "")
    _bench(benchmark, call, "cpu", family=group, candidate=cid, mode=mode, size=CPU_SIZE,
           **{"pass": pass_})  # fmt: skip



def _dataset_inputs(family: str, size: int) -> list[torch.Tensor]:
    """The real-data points of the default suite's ``realistic`` regions (counts of real
    cells at their reference fit), in float32, repeated up to ``size`` elements."""
    key = (f"{family}/dataset", "cpu", size)
    if key not in _INPUTS:
        from ztbench.candidates import load_suite
        from ztbench.points.datasets import dataset_points
        from ztbench.suite import find_suite

        spec = load_suite(find_suite("default")).families[family]
        assert spec.dataset is not None
        pts = dataset_points(spec.dataset)
        reps = -(-size // len(pts))
        _INPUTS.clear()
        _INPUTS[key] = [torch.tensor(pts[c].to_numpy(), dtype=torch.float32).repeat(reps)[:size]
                        for c in pts.columns]  # fmt: skip
    return _INPUTS[key]


@pytest.mark.parametrize("cid", REALISTIC_IDS)
def test_cpu_realistic_dataset(benchmark: Any, cid: str) -> None:
    """As test_cpu_realistic, on the real-data points (group "... real data")."""
    from ztbench.candidates import get_candidate

    c = get_candidate(cid)
    pass_ = "forward+backward"
    call = make_call(c, "eager", pass_, _dataset_inputs(c.family, CPU_SIZE))
    _bench(benchmark, call, "cpu", family=f"{c.family} real data", candidate=cid, mode="eager",
           size=CPU_SIZE, **{"pass": pass_})  # fmt: skip

# Cold compile time (inductor's caches off, dynamo reset): the shipped loss next to the
# naive formula, one forward+backward compiled and run once per round on 10^4 elements.
# Run alone: pytest tests/bench -k compile_time --benchmark-enable (minutes for ztnb).
@pytest.mark.parametrize(
    "cid", ["ztpoisson/ztbench", "ztpoisson/naive", "ztnb/ztbench", "ztnb/naive"]
)
def test_cpu_compile_time(benchmark: Any, cid: str) -> None:
    import torch._dynamo
    import torch._inductor.config as inductor_config

    from ztbench.candidates import get_candidate

    c = get_candidate(cid)
    inputs = _inputs(c.family, "cpu", 10**4)

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        torch._dynamo.reset()
        return (), {}

    def compile_and_run() -> None:
        make_call(c, "compile", "forward+backward", inputs)()

    benchmark.group = f"{c.family} compile time, cold"
    benchmark.extra_info.update(candidate=cid, threads=torch.get_num_threads())
    with inductor_config.patch(force_disable_caches=True):
        benchmark.pedantic(compile_and_run, setup=setup, rounds=2, iterations=1)
