"""The environment block (env.json) shared by the accuracy and throughput runners."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from ztbench.io.environment import cpu_model, environment_info

KEYS = {
    "ztbench", "python", "packages", "torch", "torch_cuda", "platform", "cpu", "cpu_count",
    "cpu_affinity", "torch_threads", "torch_interop_threads", "cuda_available",
    "cuda_devices", "devices", "device_kind",
}  # fmt: skip


def test_keys_versions_and_json(tmp_path: Path) -> None:
    env = environment_info(None, ["cpu"])
    assert KEYS <= set(env)
    assert "suite_sha256" not in env
    for pkg in ("torch", "numpy", "python-flint", "mpmath"):
        assert env["packages"][pkg], pkg
    assert env["torch"] == torch.__version__
    assert env["torch_threads"] == torch.get_num_threads()
    assert env["devices"] == ["cpu"] and env["device_kind"] == "cpu"
    assert env["cpu"] == cpu_model() and env["cpu"]
    assert json.loads(json.dumps(env)) == env


def test_suite_hash_is_of_the_file_bytes(tmp_path: Path) -> None:
    suite = tmp_path / "s.toml"
    suite.write_bytes(b'name = "s"\n')
    env = environment_info(suite, ("cpu",))
    assert env["suite_path"] == str(suite)
    assert env["suite_sha256"] == hashlib.sha256(b'name = "s"\n').hexdigest()


def test_thread_count_is_read_at_call_time() -> None:
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert environment_info()["torch_threads"] == 1
    finally:
        torch.set_num_threads(old)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU case")
def test_cuda_requested_without_gpu() -> None:
    env = environment_info(None, ["cpu", "cuda"])
    assert env["cuda_available"] is False and env["cuda_devices"] == []
    assert env["device_kind"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_names() -> None:
    env = environment_info(None, ["cuda"])
    assert env["cuda_devices"] == [
        torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
    ]
    assert env["device_kind"] == f"cpu+{env['cuda_devices'][0]}"


def test_env_json_has_one_section_per_stage_and_keeps_the_others(tmp_path) -> None:
    from ztbench.io.environment import stage_env_text

    acc = {"torch": "2.13.0", "devices": ["cpu"], "torch_threads": 2, "suite_sha256": "abc"}
    (tmp_path / "env.json").write_text(stage_env_text(tmp_path, "accuracy", acc))
    thr = {"torch": "2.13.0", "devices": ["cpu"], "torch_threads": 1, "suite_sha256": "abc"}
    text = stage_env_text(tmp_path, "throughput", thr)
    (tmp_path / "env.json").write_text(text)
    imp = stage_env_text(tmp_path, "impact", {"torch": "2.13.0"}, {"optimizer": "x"})
    doc = json.loads(imp)
    assert doc["suite_sha256"] == "abc" and doc["torch_threads"] == 2  # the run's, at the top
    assert doc["stages"] == {
        "accuracy": {"devices": ["cpu"], "torch_threads": 2},
        "throughput": {"devices": ["cpu"], "torch_threads": 1},
        "impact": {"optimizer": "x"},
    }
    # a new accuracy run starts the file again
    again = json.loads(stage_env_text(tmp_path, "accuracy", thr))
    assert list(again["stages"]) == ["accuracy"] and again["torch_threads"] == 1
    (tmp_path / "env.json").write_text("not json")
    assert json.loads(stage_env_text(tmp_path, "impact", acc))["stages"].keys() == {"impact"}
