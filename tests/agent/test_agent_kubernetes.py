"""The DaemonSet manifest (deploy/kubernetes): every document valid against the Kubernetes JSON
schema (kubernetes-validate's vendored schemas, strict: unknown fields are errors; no network),
and the gate's two init steps run for real in /bin/sh: the real `corecensus agent gate` writes
its result, and the taint step turns a failed gate into a node taint. ``kubectl`` is a stand-in
that records its arguments: there is no cluster here."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "corecensus-agent.yaml"
KUBERNETES = "1.31.0"
TAINT = "corecensus.io/cpu-screen"


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d is not None]


def daemonset() -> dict[str, Any]:
    (ds,) = [d for d in documents() if d["kind"] == "DaemonSet"]
    return ds


def init(name: str) -> dict[str, Any]:
    (c,) = [
        c for c in daemonset()["spec"]["template"]["spec"]["initContainers"] if c["name"] == name
    ]
    return c


@pytest.mark.parametrize("index", range(len(documents())))
def test_every_document_is_valid_for_kubernetes(index: int) -> None:
    doc = documents()[index]
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


@pytest.mark.parametrize(
    "breakage",
    ["misspelled field", "wrong type", "missing selector"],
)
def test_the_schema_check_catches_a_broken_manifest(breakage: str) -> None:
    """Must not pass: the same DaemonSet with one mistake is refused."""
    ds = copy.deepcopy(daemonset())
    spec = ds["spec"]["template"]["spec"]
    if breakage == "misspelled field":
        spec["initContainer"] = spec.pop("initContainers")
    elif breakage == "wrong type":
        spec["hostPID"] = "yes"
    else:
        del ds["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, KUBERNETES, strict=True)


def test_the_handler_runs_on_the_host_from_the_same_paths() -> None:
    """The kernel runs core_pattern's handler on the host: the launcher in /var/lib/corecensus
    and the Python in /opt/corecensus must be at the same paths inside and outside the pod."""
    spec = daemonset()["spec"]["template"]["spec"]
    assert spec["hostPID"] is True
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    (agent,) = spec["containers"]
    mounts = {m["name"]: m["mountPath"] for m in agent["volumeMounts"]}
    for name in ("host-opt", "state", "host-etc"):
        assert mounts[name] == host_paths[name]
    assert agent["securityContext"]["privileged"] is True  # /proc/sys/kernel/core_pattern
    assert "install-handler" in agent["args"][0] and "agent run" in agent["args"][0]
    assert "uninstall-handler" in agent["lifecycle"]["preStop"]["exec"]["command"]
    # The agent keeps running on the node its gate tainted.
    assert {"operator": "Exists"} in spec["tolerations"]


def _run_step(script: str, tmp_path: Path, gate_dir: Path, path: str) -> None:
    script = script.replace("/gate/", f"{gate_dir}/")
    subprocess.run(
        ["/bin/sh", "-c", script],
        check=True,
        env={"PATH": path, "NODE_NAME": "node-7"},
        timeout=300,
        cwd=tmp_path,
    )


def _stand_in_kubectl(tmp_path: Path) -> tuple[str, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "kubectl.calls"
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    kubectl.chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin", calls


def test_a_real_gate_run_feeds_the_taint_step(tmp_path: Path) -> None:
    """The gate init step with the real command (a short budget in place of 120 s): it exits 0
    whatever the gate says and leaves the result; on this healthy host the taint step adds no
    taint (passed: it clears one; unscreened: it does nothing)."""
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    corecensus = Path(sys.executable).parent / "corecensus"
    script = init("gate")["args"][0].replace("/opt/corecensus/bin/corecensus", str(corecensus))
    script = script.replace("--budget 120", "--budget 20")
    path, calls = _stand_in_kubectl(tmp_path)
    _run_step(script, tmp_path, gate_dir, path)
    result = json.loads((gate_dir / "result.json").read_text())
    assert (gate_dir / "exit").read_text().strip() == "0"
    assert result["result"] in ("passed", "unscreened")
    _run_step(init("gate-taint")["args"][0], tmp_path, gate_dir, path)
    made = calls.read_text().splitlines() if calls.exists() else []
    assert not any(f"{TAINT}=failed" in c for c in made)
    if result["result"] == "passed":
        assert made == [f"taint node node-7 {TAINT}-"]
    else:
        assert made == []


@pytest.mark.parametrize(
    ("exit_code", "result", "expected"),
    [
        ("3", {"result": "failed", "exclude_cpus": [1]}, [f"taint node node-7 {TAINT}=failed:NoSchedule --overwrite"]),
        ("0", {"result": "passed", "exclude_cpus": []}, [f"taint node node-7 {TAINT}-"]),
        ("0", {"result": "unscreened", "exclude_cpus": []}, []),
    ],
)  # fmt: skip
def test_a_failed_gate_taints_the_node_and_only_a_failed_one(
    tmp_path: Path, exit_code: str, result: dict[str, Any], expected: list[str]
) -> None:
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    (gate_dir / "exit").write_text(exit_code + "\n")
    (gate_dir / "result.json").write_text(json.dumps(result, indent=2))
    path, calls = _stand_in_kubectl(tmp_path)
    _run_step(init("gate-taint")["args"][0], tmp_path, gate_dir, path)
    assert (calls.read_text().splitlines() if calls.exists() else []) == expected
