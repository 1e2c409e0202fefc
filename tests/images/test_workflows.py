"""The GitHub workflows: actionlint and zizmor pass; the release publishes what the chart pulls by default.

scripts/release_plan.py is the release workflow's only source of names and versions, so the agreement is
checked where it matters: the chart rendered with its defaults pulls exactly the references the plan
publishes (router, server cpu, server cuda), and the workflow builds, attests, signs and pushes those.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dsdeploy.images import DEFAULT_REGISTRY, PROJECT_IMAGES, REPO_ROOT, package_version
from infra.chart_command import find_helm

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
RELEASE = WORKFLOWS / "release.yml"
CHART = REPO_ROOT / "charts" / "dsdeploy" / "Chart.yaml"
VERSION = package_version()


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    assert Path(path).is_file(), f"{name} is not installed: `make install-test` installs it (pyproject dev extra)"
    return path


def _plan(tag: str = f"v{VERSION}", owner: str = "dsdeploy") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "release_plan.py"), "--tag", tag, "--owner", owner],
        capture_output=True,
        text=True,
        check=False,
    )


def plan_outputs(owner: str = "dsdeploy") -> dict[str, str]:
    proc = _plan(owner=owner)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


def published_refs(owner: str = "dsdeploy") -> dict[str, str]:
    plan = plan_outputs(owner)
    return {
        entry["key"]: f"{plan['registry']}/{entry['name']}:{entry['tag']}"
        for entry in json.loads(plan["matrix"])["include"]
    }


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS.glob("*.yml")), ids=lambda p: p.name)
def test_actionlint_passes(workflow: Path):
    proc = subprocess.run(
        [_tool("actionlint"), "-no-color", str(workflow)], capture_output=True, text=True, check=False, cwd=REPO_ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_finds_nothing():
    proc = subprocess.run(
        [_tool("zizmor"), "--offline", "--no-progress", "--format", "plain", str(WORKFLOWS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings to report" in proc.stdout + proc.stderr


def test_the_linters_are_live(tmp_path: Path):
    """A workflow with a script injection and a typo'd key fails both (so a pass above means something)."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: pull_request_target\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        '      - run: echo "${{ github.event.pull_request.title }}"\n        shel: bash\n'
    )
    lint = subprocess.run([_tool("actionlint"), "-no-color", str(bad)], capture_output=True, text=True, check=False)
    assert lint.returncode != 0 and "shel" in lint.stdout
    audit = subprocess.run(
        [_tool("zizmor"), "--offline", "--no-progress", "--format", "plain", str(bad.parent)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert audit.returncode != 0 and "template-injection" in audit.stdout + audit.stderr


def test_release_plan_publishes_every_project_image_under_the_owner_in_lowercase():
    refs = published_refs(owner="DSDeploy")
    assert refs == {
        "router": f"ghcr.io/dsdeploy/dsdeploy-router:{VERSION}",
        "server-cpu": f"ghcr.io/dsdeploy/dsdeploy-server:{VERSION}-cpu",
        "server-cuda": f"ghcr.io/dsdeploy/dsdeploy-server:{VERSION}-cuda",
    }
    matrix = {e["key"]: e for e in json.loads(plan_outputs()["matrix"])["include"]}
    assert matrix["router"]["platforms"] == "linux/amd64,linux/arm64"
    assert matrix["server-cuda"]["build-args"] == "VARIANT=cuda"
    assert set(matrix) == {image.key for image in PROJECT_IMAGES}
    assert plan_outputs()["chart-repository"] == "oci://ghcr.io/dsdeploy/charts"


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("v9.9.9", f"tag 'v9.9.9' does not match the package version: expected v{VERSION}"),
        (VERSION, "does not match the package version"),
    ],
)
def test_release_plan_refuses_a_tag_that_is_not_the_version(tag: str, message: str):
    proc = _plan(tag=tag)
    assert proc.returncode == 1 and message in proc.stderr and proc.stdout == ""


def test_chart_version_and_app_version_are_the_package_version():
    chart = yaml.safe_load(CHART.read_text())
    assert str(chart["version"]) == str(chart["appVersion"]) == VERSION
    import dsdeploy

    assert dsdeploy.__version__ == VERSION


def test_chart_defaults_pull_exactly_what_the_release_publishes():
    """The repository owner in Chart.yaml's home is the GHCR owner the chart's defaults and the release use."""
    owner = re.match(r"^https://github\.com/([^/]+)/", yaml.safe_load(CHART.read_text())["home"]).group(1)
    assert f"ghcr.io/{owner}" == DEFAULT_REGISTRY
    refs = published_refs(owner)

    def images(*sets: str) -> set[str]:
        args = [arg for item in sets for arg in ("--set", item)]
        text = _helm_template(args)
        return set(re.findall(r"^\s+image: (\S+)$", text, re.MULTILINE))

    assert refs["router"] in images()
    assert images("engine.type=server", "engine.gpusPerReplica=0") == {refs["router"], refs["server-cpu"]}
    assert images("engine.type=server", "engine.gpusPerReplica=1") == {refs["router"], refs["server-cuda"]}


def _helm_template(args: list[str]) -> str:
    return subprocess.run(
        [find_helm(), "template", "dsdeploy", str(CHART.parent), *args], capture_output=True, text=True, check=True
    ).stdout


def test_release_workflow_builds_attests_signs_and_pushes_the_plan():
    workflow = yaml.safe_load(RELEASE.read_text())
    assert workflow[True]["push"]["tags"] == ["v[0-9]+.[0-9]+.[0-9]+"]  # `on:` parses as True
    assert workflow["permissions"] == {}, "no job gets a permission it does not name"
    jobs = workflow["jobs"]
    plan_step = next(s for s in jobs["plan"]["steps"] if s.get("id") == "plan")
    assert "scripts/release_plan.py" in plan_step["run"] and "github.repository_owner" in plan_step["env"]["OWNER"]
    images = jobs["images"]
    assert images["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert images["permissions"] == {"contents": "read", "packages": "write", "id-token": "write"}
    build = next(s for s in images["steps"] if s.get("id") == "build")
    assert build["uses"].startswith("docker/build-push-action@")
    assert images["env"]["IMAGE"] == "${{ needs.plan.outputs.registry }}/${{ matrix.name }}"
    inputs = build["with"]
    assert inputs["tags"] == "${{ env.IMAGE }}:${{ matrix.tag }}"
    assert inputs["platforms"] == "${{ matrix.platforms }}" and inputs["file"] == "${{ matrix.dockerfile }}"
    assert inputs["push"] is True and inputs["sbom"] is True and inputs["provenance"] == "mode=max"
    sign = images["steps"][images["steps"].index(build) + 1]
    assert 'cosign sign --yes "${IMAGE}@${DIGEST}"' in sign["run"]
    assert sign["env"]["DIGEST"] == "${{ steps.build.outputs.digest }}"
    chart = jobs["chart"]
    script = next(s["run"] for s in chart["steps"] if "helm push" in s.get("run", ""))
    assert 'helm push "dist/dsdeploy-${VERSION}.tgz" "$CHART_REPOSITORY"' in script
    assert "cosign sign --yes" in script
    assert chart["env"]["CHART_REPOSITORY"] == "${{ needs.plan.outputs.chart-repository }}"
    for job in jobs.values():
        for step in job["steps"]:
            if "uses" in step:
                assert re.match(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}$", step["uses"]), f"not pinned by commit: {step}"


def test_pull_request_workflow_runs_make_test_as_ci_does():
    workflow = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    assert "pull_request" in workflow[True]
    [job] = workflow["jobs"].values()
    assert job["container"]["image"].startswith("debian:bookworm")
    assert [s["run"] for s in job["steps"] if "run" in s][-1] == "make test"
    assert job["timeout-minutes"] <= 90
